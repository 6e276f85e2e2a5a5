"""Whether the serial ports a config names are there, for `tcu check-config` and the start of `tcu run`.

A legal-eCall vehicle whose modem port does not exist cannot make the 112 call: `check-config`
refuses it, so an installer that runs it (hil/deploy/install-pi.sh) stops before starting a unit
that would never call. `tcu run` itself starts anyway and keeps retrying the port, logging each
attempt (tcu.sources.source_loop), because a USB modem may enumerate after the service starts and a
restart loop would not bring it sooner. A missing signal source port is only a warning here.
A pyserial URL (`socket://`, `rfc2217://`, ...) is not a path and is not checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tcu.config import AgentConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class PortProblem:
    key: str  # e.g. "ecall.port", "sources.obd.port"
    port: str
    reason: str
    fatal: bool  # the legal eCall's modem: the configuration cannot be used

    def sentence(self, config_path: Path) -> str:
        return f"{self.key} in {config_path}: {self.port} {self.reason}"


def _reason(port: str) -> str | None:
    if "://" in port:
        return None
    path = Path(port)
    if not path.exists():  # a dangling /dev/serial/by-id link too: the adapter is unplugged
        return "does not exist (is the adapter plugged in? see ls -l /dev/serial/by-id/)"
    if not os.access(path, os.R_OK | os.W_OK):
        return "cannot be opened for reading and writing by this user (is it in the dialout group?)"
    return None


def port_problems(config: AgentConfig) -> list[PortProblem]:
    """The configured device paths that are missing or not accessible, the legal eCall's modem first."""
    problems = []
    if config.ecall is not None and (reason := _reason(config.ecall.port)) is not None:
        fatal = config.ecall.legal_ecall
        if fatal:
            reason += "; a legal-eCall vehicle cannot call 112 without its modem"
        problems.append(PortProblem(key="ecall.port", port=config.ecall.port, reason=reason, fatal=fatal))
    for name, section in sorted(config.sources.items()):
        port = section.get("port")
        if isinstance(port, str) and (reason := _reason(port)) is not None:
            problems.append(PortProblem(key=f"sources.{name}.port", port=port, reason=reason, fatal=False))
    return problems
