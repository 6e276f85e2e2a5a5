"""The agent as a real process, as on a Pi: so a scenario or a test can SIGKILL it like a power cut."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from tcu.virtual_time import FLAG, VirtualClock, real_seconds

LogLevel = Literal["debug", "info", "warning", "error"]


class AgentProcess:
    """`tcu run --config CONFIG` in a process of its own; the bench's runner, chaos runs and the
    integration tests all start the agent this one way."""

    def __init__(
        self,
        config: Path,
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        clock: VirtualClock | None = None,
        log_level: LogLevel = "info",
    ) -> None:
        """`log`: the file its output is appended to; None: it writes to this process's stdout and
        stderr (a test's captured output). `clock`: the bench's virtual clock, handed to each start
        (with the calendar as it is then)."""
        self.config = config
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._clock = clock
        self._log = log
        self._log_level = log_level
        self._process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        output = self._log.open("ab") if self._log is not None else None
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tcu.cli",
                "--log-level",
                self._log_level,
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
            if output is not None:
                output.close()

    async def kill(self) -> int | None:
        """A power cut: nothing is flushed, nothing is said to the broker. Returns the exit status
        (-SIGKILL), or None when it was not running."""
        return await self._signal(signal.SIGKILL)

    async def stop(self, timeout_s: float = 15.0) -> int | None:
        """An orderly stop (SIGTERM), escalating to SIGKILL if it hangs; returns the exit status."""
        try:
            async with asyncio.timeout(real_seconds(timeout_s)):  # a process stops in real time
                return await self._signal(signal.SIGTERM)
        except TimeoutError:
            return await self.kill()

    async def _signal(self, signum: signal.Signals) -> int | None:
        process = self._process
        if process is None or process.returncode is not None:
            return None
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        return await process.wait()
