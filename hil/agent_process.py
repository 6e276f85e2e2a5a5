"""The agent as a real process, as on a Pi: so a scenario can SIGKILL it like a power cut."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from tcu.virtual_time import FLAG, VirtualClock, real_seconds


class AgentProcess:
    def __init__(
        self,
        config: Path,
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        clock: VirtualClock | None = None,
    ) -> None:
        """`clock`: the bench's virtual clock, handed to each start (with the calendar as it is then)."""
        self.config = config
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._clock = clock
        self._log = log
        self._process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        output = self._log.open("ab") if self._log is not None else asyncio.subprocess.DEVNULL
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tcu.cli",
                "--log-level",
                "info",
                "run",
                "--config",
                str(self.config),
                *(() if self._clock is None else (FLAG, self._clock.base.encode())),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env=self._env,
            )
        finally:
            if not isinstance(output, int):
                output.close()

    async def kill(self) -> None:
        """A power cut: nothing is flushed, nothing is said to the broker."""
        await self._signal(signal.SIGKILL)

    async def stop(self, timeout_s: float = 15.0) -> None:
        """An orderly stop (SIGTERM), escalating to SIGKILL if it hangs."""
        try:
            async with asyncio.timeout(real_seconds(timeout_s)):  # a process stops in real time
                await self._signal(signal.SIGTERM)
        except TimeoutError:
            await self.kill()

    async def _signal(self, signum: signal.Signals) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        await process.wait()
