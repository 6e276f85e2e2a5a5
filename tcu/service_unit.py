"""The systemd unit that runs the agent on a Raspberry Pi (or any systemd host).

Type=notify with a watchdog: systemd starts dependents once the durable queue is open and restarts
the agent if its event loop stops turning. StateDirectory gives the data dir (0700, owned by the
service user); dialout gives the serial adapters; the rest of the file system is read-only to it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tcu.errors import ConfigError

UNIT_NAME = "tcu-agent.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitOptions:
    config: Path
    user: str = "tcu"
    python: Path = Path(sys.executable)
    data_dir: Path = Path("/var/lib/tcu")
    watchdog_s: int = 30


def render_unit(options: UnitOptions) -> str:
    return f"""[Unit]
Description=TCU simulator agent (telematics control unit)
Documentation=https://example.invalid/tcu-sim/docs/raspberry-pi.md
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={options.python} -m tcu.cli run --config {options.config}
User={options.user}
Group={options.user}
SupplementaryGroups=dialout
StateDirectory={options.data_dir.name}
StateDirectoryMode=0700
UMask=0077
Restart=always
RestartSec=5
WatchdogSec={options.watchdog_s}
TimeoutStartSec=60
TimeoutStopSec=20
Environment=PYTHONUNBUFFERED=1
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths={options.data_dir}

[Install]
WantedBy=multi-user.target
"""


def install_unit(options: UnitOptions, unit_dir: Path) -> Path:
    """Write the unit into `unit_dir`; ConfigError, one sentence, if that folder cannot take it."""
    if not unit_dir.is_dir():
        what = "is not a directory" if unit_dir.exists() else "does not exist"
        raise ConfigError(
            f"the unit directory {unit_dir} {what}; systemd reads {SYSTEM_UNIT_DIR} "
            "(give --unit-dir a folder that exists)"
        )
    path = unit_dir / UNIT_NAME
    try:
        path.write_text(render_unit(options))
        path.chmod(0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write the unit {path}: {(exc.strerror or str(exc)).lower()} (run as root?)") from exc
    return path
