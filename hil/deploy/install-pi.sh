#!/usr/bin/env bash
# Install the TCU agent as a systemd service on Raspberry Pi OS (64-bit) or any Debian with systemd.
#
#   sudo bash install-pi.sh --vin WMWZZZ3CZ2E123456 --broker mqtts://broker.example:8883 \
#        --backend-keys /path/to/backend.x25519.pub,/path/to/backend.ed25519.pub [--source /path/to/tcu-sim]
#
# Creates the system user `tcu` (member of dialout for the serial adapters), a venv in /opt/tcu,
# the vehicle key in /etc/tcu/keys (0600, owned by tcu), /etc/tcu/agent.toml (kept if present),
# and the unit tcu-agent.service (Type=notify, watchdog, restart always); logs go to the journal.
set -euo pipefail

vin="" broker="" backend_keys="" source="tcu-sim"
while [ $# -gt 0 ]; do
    case "$1" in
        --vin) vin="$2"; shift 2 ;;
        --broker) broker="$2"; shift 2 ;;
        --backend-keys) backend_keys="$2"; shift 2 ;;
        --source) source="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo)" >&2; exit 2; }
if [ -z "$vin" ] || [ -z "$broker" ] || [ -z "$backend_keys" ]; then
    echo "need --vin, --broker and --backend-keys X25519_PUB,ED25519_PUB" >&2
    exit 2
fi
IFS=, read -r backend_box_pub backend_sign_pub <<<"$backend_keys"

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
id tcu >/dev/null 2>&1 || useradd --system --home-dir /var/lib/tcu --shell /usr/sbin/nologin --groups dialout tcu

python3 -m venv /opt/tcu
/opt/tcu/bin/pip install --quiet --upgrade pip
/opt/tcu/bin/pip install --quiet "$source"

install -d -m 0755 /etc/tcu
install -d -m 0700 -o tcu -g tcu /etc/tcu/keys
if [ ! -f "/etc/tcu/keys/$vin.x25519.key" ]; then
    /opt/tcu/bin/tcu keygen --dir /etc/tcu/keys --name "$vin"
fi
install -m 0644 "$backend_box_pub" /etc/tcu/keys/backend.x25519.pub
install -m 0644 "$backend_sign_pub" /etc/tcu/keys/backend.ed25519.pub
chown -R tcu:tcu /etc/tcu/keys
chmod 0600 "/etc/tcu/keys/$vin.x25519.key"

if [ ! -f /etc/tcu/agent.toml ]; then
    cat >/etc/tcu/agent.toml <<TOML
vin = "$vin"
data_dir = "/var/lib/tcu"

[keys]
vehicle_private_key = "keys/$vin.x25519.key"
backend_public_key = "keys/backend.x25519.pub"
backend_verify_key = "keys/backend.ed25519.pub"

[broker]
url = "$broker"
username = "$vin"
# password = "..."       # or client certificates: ca_file, cert_file, key_file

[telemetry]
interval_s = 5
require_services = true

[ecall]
legal_ecall = true       # EU 112 eCall: without a working modem port the agent refuses to start
port = "/dev/ttyUSB2"    # the cellular modem's AT port (see docs/raspberry-pi.md)
profile = "simcom"

# Serial adapters: see docs/raspberry-pi.md ("Configure the ports").
TOML
fi
# It may hold the broker password: the agent refuses a config that others can read.
chown tcu:tcu /etc/tcu/agent.toml
chmod 0600 /etc/tcu/agent.toml

install -d -m 0700 -o tcu -g tcu /var/lib/tcu
runuser -u tcu -- /opt/tcu/bin/tcu check-config --config /etc/tcu/agent.toml
/opt/tcu/bin/tcu service install --config /etc/tcu/agent.toml --python /opt/tcu/bin/python
systemctl daemon-reload
systemctl enable --now tcu-agent.service
echo "installed. Vehicle public key to enrol with the backend: /etc/tcu/keys/$vin.x25519.pub"
echo "check: systemctl status tcu-agent; journalctl -u tcu-agent -f"
