"""What a chaos run found: the audit, the telemetry holes, the crashes and what its logs say."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from hil.audit import SeqAudit, count_seqs, format_ranges
from hil.chaos_schedule import ChaosConfig, Fault
from hil.telemetry_holes import Hole

# In the agent's log: each count is a finding worth a look even when the audit passes.
_LOG_FINDINGS = {
    "telematics restarts": "telematics failed; restarting",
    "records lost from memory on stop": "held only in memory",
    "acks that could not be applied": "cannot apply ack",
    "acks ignored (another queue epoch)": "ignored an ack for queue epoch",
    "queue writes refused": "keeping new records in memory",
    "rejected downlink messages": "rejected downlink",
    "tracebacks": "Traceback (most recent call last)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosReport:
    settings: ChaosConfig
    schedule: tuple[Fault, ...]
    actions: list[str]
    audit: SeqAudit
    issued_through: int | None  # the agent's last sequence number, read from its queue at the end
    left_queued: list[list[int]] | None  # seqs still in the agent's queue after the drain (not delivered)
    drained: bool
    holes: list[Hole]
    log_findings: dict[str, int]
    crashes: list[str]  # a process that ended on its own

    @property
    def unexplained_holes(self) -> list[Hole]:
        return [hole for hole in self.holes if hole.explained is None]

    @property
    def ok(self) -> bool:
        return self.audit.ok and self.drained and not self.unexplained_holes and not self.crashes

    def describe(self) -> str:
        s = self.settings
        lines = [
            f"chaos seed {s.seed}: {s.seconds:.0f} s of faults, telemetry every {s.telemetry_interval_s} s, "
            f"queue bound {s.max_records} records, data dir on a {s.disk_bytes // 1024} KiB tmpfs",
            f"reproduce: tcu-hil chaos --seed {s.seed} --seconds {s.seconds:g}",
            "schedule:",
            *(f"  {fault.describe()}" for fault in self.schedule),
            "what happened:",
            *(f"  {line}" for line in self.actions),
            f"agent issued seq 1..{self.issued_through}; drained: {'yes' if self.drained else 'NO'}; "
            + (
                "its queue unreadable"
                if self.left_queued is None
                else f"left in its queue: {count_seqs(self.left_queued)} {format_ranges(self.left_queued)}"
            ),
            self.audit.describe(),
        ]
        if self.holes:
            lines.append("telemetry holes:")
            for hole in self.holes:
                verdict = hole.explained or "UNEXPLAINED"
                lines.append(f"  {hole.seconds:6.1f} s {hole.where} at {_clock(hole.start)}: {verdict}")
        lines.extend(f"CRASH: {crash}" for crash in self.crashes)
        findings = ", ".join(f"{name}: {count}" for name, count in self.log_findings.items() if count)
        lines.append(f"logs: {findings or 'nothing remarkable'}")
        lines.append("PASSED" if self.ok else "FAILED")
        return "\n".join(lines)


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}"


def log_findings(log: Path) -> dict[str, int]:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    return {name: text.count(needle) for name, needle in _LOG_FINDINGS.items()}
