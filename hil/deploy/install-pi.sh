#!/usr/bin/env bash
# Install the TCU agent as a systemd service on Raspberry Pi OS (64-bit) or any Debian with systemd.
# The walkthrough is docs/raspberry-pi.md; tests/hil/test_pi_walkthrough.py runs it with --root.
#
#   sudo bash install-pi.sh --vin WMWZZZ3CZ2E123456 --broker mqtts://broker.example:8883 \
#        --backend-keys /path/to/backend.x25519.pub,/path/to/backend.ed25519.pub \
#        --modem-port /dev/serial/by-id/usb-SimTech_..._-if02-port0 \
#        [--brand MINI] [--first-registration 2026-03-01] [--source /path/to/tcu-sim or a wheel]
#        [--python /usr/bin/python3] [--root DIR] [--dry-run]
#
# Creates the system user `tcu` (member of dialout for the serial adapters), a venv in /opt/tcu,
# the vehicle key in /etc/tcu/keys (0600, owned by tcu), /etc/tcu/agent.toml (kept if present),
# checks it with `tcu check-config` (a legal-eCall config whose modem port does not exist is refused),
# and installs and starts the unit tcu-agent.service (Type=notify, watchdog, restart always).
#
# --dry-run   print every action instead of doing it; what would stop a real run on this host (a missing
#             modem port, key file or source) is printed as "would fail: ..." and the preview goes on
#             (exit status 1 when there was any), so the page's command can be tried on a laptop first.
# --root DIR  install everything under DIR (DIR/etc/tcu, DIR/opt/tcu, DIR/var/lib/tcu,
#             DIR/etc/systemd/system) for the current user: no root needed, and no apt-get, useradd,
#             chown, runuser or systemctl; agent.toml and the unit name the paths under DIR, so the
#             agent runs from there (the unit's ExecStart line, by hand).
# --python P  use this Python, which already has tcu-sim installed, instead of a venv in /opt/tcu.
set -euo pipefail

usage="usage: install-pi.sh --vin VIN --broker URL --backend-keys X25519_PUB,ED25519_PUB --modem-port PATH
       [--brand BMW|'BMW i'|MINI] [--first-registration YYYY-MM-DD] [--source DIR_OR_WHEEL]
       [--python PYTHON] [--root DIR] [--dry-run]"
fail() {
    echo "install-pi.sh: error: $*" >&2
    exit 2
}
problems=0
# A problem of this host rather than of the arguments: a real run stops at it, a dry run names it and
# previews on (dry_run is set before the first call).
problem() {
    if [ "$dry_run" -eq 1 ]; then
        echo "would fail: $*"
        problems=$((problems + 1))
    else
        fail "$*"
    fi
}

vin="" broker="" backend_keys="" modem_port="" brand="BMW" first_registration="" source="tcu-sim"
python="" root="" dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1; shift; continue ;;
        -h | --help) echo "$usage"; exit 0 ;;
        --*) [ $# -ge 2 ] || fail "$1 needs a value"$'\n'"$usage" ;;
        *) fail "unexpected argument '$1'"$'\n'"$usage" ;;
    esac
    case "$1" in
        --vin) vin="$2" ;;
        --broker) broker="$2" ;;
        --backend-keys) backend_keys="$2" ;;
        --modem-port) modem_port="$2" ;;
        --brand) brand="$2" ;;
        --first-registration) first_registration="$2" ;;
        --source) source="$2" ;;
        --python) python="$2" ;;
        --root) root="$2" ;;
        *) fail "unknown option $1"$'\n'"$usage" ;;
    esac
    shift 2
done

if [ -z "$vin" ] || [ -z "$broker" ] || [ -z "$backend_keys" ] || [ -z "$modem_port" ]; then
    fail "need --vin, --broker, --backend-keys X25519_PUB,ED25519_PUB and --modem-port"$'\n'"$usage"
fi
# The values go into a TOML file: refuse what would break out of its quotes rather than escape it.
[[ "$vin" =~ ^[A-HJ-NPR-Z0-9]{17}$ ]] || fail "--vin '$vin' is not 17 characters of A-Z (no I, O, Q) and 0-9"
[[ "$broker" =~ ^mqtts?://[^\"\\[:space:]]+$ ]] || fail "--broker '$broker' is not mqtt://host:port or mqtts://host:port"
case "$brand" in BMW | "BMW i" | MINI) ;; *) fail "--brand '$brand' is not BMW, 'BMW i' or MINI" ;; esac
if [ -n "$first_registration" ] && ! [[ "$first_registration" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]]; then
    fail "--first-registration '$first_registration' is not a YYYY-MM-DD date"
fi
[[ "$modem_port" =~ ^[^\"\\]+$ ]] || fail "--modem-port '$modem_port' holds a quote or a backslash"
IFS=, read -r backend_box_pub backend_sign_pub <<<"$backend_keys"
if [ -z "$backend_box_pub" ] || [ -z "$backend_sign_pub" ]; then
    fail "--backend-keys needs two files, X25519_PUB,ED25519_PUB"
fi
[ "$dry_run" -eq 0 ] || echo "dry run: printing what would be done; nothing is changed"
# Legal eCall needs the modem: say so now rather than after writing a config around a wrong path.
if [[ "$modem_port" != *://* ]] && [ ! -e "$modem_port" ]; then
    problem "--modem-port $modem_port does not exist (is the modem plugged in? see ls -l /dev/serial/by-id/)"
fi
for key in "$backend_box_pub" "$backend_sign_pub"; do
    [ -f "$key" ] || problem "backend public key $key does not exist (copy it from the backend's 'backend-stub keygen')"
done
# pip would take a missing folder for a package name to look up on an index: name the path instead.
if [ -z "$python" ] && [ ! -e "$source" ]; then
    problem "--source $source does not exist (the tcu-sim folder or wheel, relative to $(pwd))"
fi

if [ -n "$root" ]; then
    root="$(realpath -m -- "$root")"
    echo "--root $root: installing for user $(id -un) under $root; no apt-get, useradd, chown, runuser or systemctl"
elif [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    fail "run as root (sudo), or give --root DIR to install under DIR as yourself, or --dry-run"
fi

etc="$root/etc/tcu"
opt="$root/opt/tcu"
state="$root/var/lib/tcu"
units="$root/etc/systemd/system"
config="$etc/agent.toml"
user="tcu"
[ -z "$root" ] || user="$(id -un)"

# Every change goes through `act`, so that --dry-run shows exactly what a real run does.
act() {
    if [ "$dry_run" -eq 1 ]; then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}
# Actions that only a system install does (a --root install belongs to the current user).
as_system() {
    if [ -n "$root" ]; then
        printf 'skipped under --root:'
        printf ' %q' "$@"
        printf '\n'
    else
        act "$@"
    fi
}

if [ -z "$python" ]; then
    python="$opt/bin/python"
    as_system apt-get update -qq
    as_system env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    act python3 -m venv "$opt"
    act "$python" -m pip install --quiet --upgrade pip
    act "$python" -m pip install --quiet "$source"
else
    echo "using $python (tcu-sim installed there already): no venv in $opt, nothing installed with pip"
    "$python" -c "import tcu.cli" || problem "$python cannot import tcu: install tcu-sim there first"
fi
tcu_cli() {
    act "$python" -m tcu.cli --log-level warning "$@"
}

if [ -n "$root" ] || ! id tcu >/dev/null 2>&1; then
    as_system useradd --system --home-dir /var/lib/tcu --shell /usr/sbin/nologin --groups dialout tcu
fi

act install -d -m 0755 "$etc"
act install -d -m 0700 "$etc/keys"
as_system chown tcu:tcu "$etc/keys"
if [ ! -f "$etc/keys/$vin.x25519.key" ]; then
    tcu_cli keygen --dir "$etc/keys" --name "$vin"
else
    echo "keeping the vehicle key $etc/keys/$vin.x25519.key"
fi
act install -m 0644 "$backend_box_pub" "$etc/keys/backend.x25519.pub"
act install -m 0644 "$backend_sign_pub" "$etc/keys/backend.ed25519.pub"
as_system chown -R tcu:tcu "$etc/keys"
act chmod 0600 "$etc/keys/$vin.x25519.key"

registration="# first_registration = 2026-03-01   # as enrolled on the backend (--first-registration)"
[ -z "$first_registration" ] || registration="first_registration = $first_registration   # as enrolled on the backend"
agent_toml="vin = \"$vin\"
data_dir = \"$state\"

[keys]
vehicle_private_key = \"keys/$vin.x25519.key\"
backend_public_key = \"keys/backend.x25519.pub\"
backend_verify_key = \"keys/backend.ed25519.pub\"

[broker]
url = \"$broker\"
username = \"$vin\"
# password = \"...\"       # or client certificates: ca_file, cert_file, key_file

[telemetry]
interval_s = 5
require_services = true  # nothing is sent until the backend books a base service (e.g. 6AE)

[vehicle]                # must match the backend's enrolment (--brand, --first-registration)
brand = \"$brand\"
$registration

[ecall]
legal_ecall = true       # EU 112 eCall: enrol with --legal-ecall; check-config refuses a missing modem port
port = \"$modem_port\"
profile = \"simcom\"

# Serial adapters ([sources.obd], [sources.can], [sources.gnss]): see docs/raspberry-pi.md.
"
if [ -f "$config" ]; then
    echo "keeping $config (delete it to have it written again)"
elif [ "$dry_run" -eq 1 ]; then
    printf 'would write %s:\n%s' "$config" "$agent_toml"
else
    printf '%s' "$agent_toml" >"$config"
fi
# It may hold the broker password: the agent refuses a config that others can read.
as_system chown tcu:tcu "$config"
act chmod 0600 "$config"

act install -d -m 0700 "$state"
as_system chown tcu:tcu "$state"
if [ -n "$root" ]; then
    tcu_cli check-config --config "$config"
else
    act runuser -u tcu -- "$python" -m tcu.cli --log-level warning check-config --config "$config"
fi
act install -d -m 0755 "$units"
tcu_cli service install --config "$config" --python "$python" --user "$user" --unit-dir "$units"
as_system systemctl daemon-reload
as_system systemctl enable --now tcu-agent.service

if [ "$dry_run" -eq 1 ] && [ ! -f "$etc/keys/$vin.x25519.pub" ]; then
    echo "no vehicle key was written (dry run): a real run writes its public key, to enrol on the backend, to" \
        "$etc/keys/$vin.x25519.pub"
else
    echo "vehicle public key, to enrol on the backend: $etc/keys/$vin.x25519.pub"
fi
if [ -n "$root" ]; then
    echo "run the agent: $python -m tcu.cli run --config $config"
else
    echo "check: systemctl status tcu-agent; journalctl -u tcu-agent -f"
fi
if [ "$problems" -gt 0 ]; then
    echo "install-pi.sh: dry run: a real run would stop at the $problems problem(s) marked 'would fail' above" >&2
    exit 1
fi
