"""The backend stub as a process of its own, so a chaos run can SIGKILL it in the middle of a transaction."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path


class BackendProcess:
    """`backend-stub run` as a process, so it can be SIGKILLed in the middle of a transaction."""

    def __init__(self, config: Path, log: Path) -> None:
        self._config = config
        self._log = log
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self._log.open("ab") as output:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "backend_stub.cli",
                "--log-level",
                "info",
                "run",
                "--config",
                str(self._config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )

    @property
    def pid(self) -> int:
        """The running backend's process id (a fleet run measures its CPU time)."""
        if self._process is None:
            raise RuntimeError("the backend is not running")
        return self._process.pid

    @property
    def exited(self) -> int | None:
        """The exit code of a backend that ended on its own; None while it runs (or was never started)."""
        return None if self._process is None else self._process.returncode

    async def kill(self) -> None:
        await self._end(kill=True)

    async def stop(self) -> None:
        await self._end(kill=False)

    async def _end(self, *, kill: bool) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill() if kill else process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
