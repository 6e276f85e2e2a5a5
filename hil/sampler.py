"""What the bench records while a scenario runs: the agent's status once a (scenario) second, and the
backend's news (measure attempts, MSDs at the PSAP, provisioning file states) as events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hil.timeline import EventKind, Sample
from tcu.status import read_status

if TYPE_CHECKING:
    from hil.runner import Bench, ScenarioRunner


class BenchSampler:
    def __init__(self, runner: ScenarioRunner, bench: Bench) -> None:
        self._runner = runner
        self._bench = bench
        self._last_link: bool | None = None
        self._seen: set[tuple[str, ...]] = set()  # backend facts already turned into events

    async def run(self) -> None:
        runner, bench = self._runner, self._bench
        status_path = bench.layout.data_dir(runner.scenario.vin) / "status.json"
        while True:
            status = read_status(status_path) or {}
            link = bool(status.get("link", {}).get("up"))
            if link != self._last_link and status:
                runner.event(EventKind.LINK, "link up" if link else "link down", str(status["link"].get("error") or ""))
                self._last_link = link
            speed = status.get("signals", {}).get("Vehicle.Speed")
            measure = status.get("measure")
            sample = Sample(
                t=round(runner.now(), 2),
                speed_kmh=float(speed) if isinstance(speed, int | float) else None,
                coverage=link,
                queue_depth=int(status.get("queue", {}).get("depth", 0)),
                stored_at_backend=len(bench.backend.store.seqs(runner.scenario.vin)),
                ecall_state=_ecall_state(status),
                measure_state=None if not measure else f"{measure['id']} #{measure['attempt']}",
            )
            runner.timeline.samples.append(sample)
            runner.on_sample(sample)
            self._backend_events()
            await runner._hold(1.0)

    def _backend_events(self) -> None:
        runner, bench = self._runner, self._bench
        """What the backend learnt since the last sample: measure attempts, provisioning file states."""
        vin = runner.scenario.vin
        for measure in bench.backend.measure_store.all(vin):
            for attempt in bench.backend.measure_store.history(measure.measure_id):
                key: tuple[str, ...] = ("measure", measure.measure_id, str(attempt.attempt), attempt.status)
                if key not in self._seen:
                    self._seen.add(key)
                    detail = f"{attempt.code or ''} {attempt.reason or ''}".strip()
                    label = f"{measure.measure_id} #{attempt.attempt} {attempt.status}"
                    runner.event(EventKind.MEASURE, label, detail)
        psap = bench.backend.psap
        for received in [] if psap is None else psap.msds:
            key = ("msd", str(received.call_id), str(received.mono))
            if key not in self._seen:
                self._seen.add(key)
                where = (
                    ""
                    if received.msd is None
                    else f" at {received.msd.latitude_deg:.5f},{received.msd.longitude_deg:.5f}"
                )
                runner.event(
                    EventKind.ECALL, "MSD at the PSAP", f"call {received.call_id}{where} {received.error or ''}".strip()
                )
        for issued in bench.backend.provisioning_store.files(vin):
            file_key: tuple[str, ...] = ("file", str(issued.version), issued.state.value)
            if file_key not in self._seen:
                self._seen.add(file_key)
                runner.event(EventKind.PROVISIONING, f"file v{issued.version} {issued.state.value}", issued.operation)


def _ecall_state(status: dict[str, Any]) -> str | None:
    ecall = status.get("ecall")
    return str(ecall.get("state")) if isinstance(ecall, dict) and ecall.get("state") else None
