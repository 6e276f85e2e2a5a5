"""A modem at the far end of the line that answers each command from a script, for exact interleavings.

    modem = ScriptedModem()
    client = ModemClient(ModemClientConfig(port="scripted"), on_event=..., opener=modem.open)
    modem.crossing["AT+CECALL=3"] = ["NO CARRIER"]  # written just before the next answer to that command
    modem.urc("+CECALLIND: 6")                      # an unsolicited line, now

Answers go out on the loop's next turn (`call_soon`), as bytes from a port would, never inside `send`;
nothing waits on wall time, so a test decides the order of every line the client reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tcu.sources.modem_client import DataCallback, LostCallback

_ANSWERS = {
    "AT+CPIN?": ["+CPIN: READY", "OK"],
    "AT+CREG?": ["+CREG: 1,1", "OK"],
    "AT+CSQ": ["+CSQ: 20,99", "OK"],
}


class ScriptedModem:
    def __init__(self) -> None:
        self.sent: list[str] = []  # every command line the client wrote, in order
        self.answers: dict[str, list[str]] = {}  # command → its answer lines, instead of the default "OK"
        self.crossing: dict[str, list[str]] = {}  # command → lines written before its next answer (used once)
        self._on_data: DataCallback | None = None

    async def open(self, on_data: DataCallback, on_lost: LostCallback) -> ScriptedModem:
        self._on_data = on_data
        return self

    def send(self, data: bytes) -> None:
        command = data.decode("ascii").removesuffix("\r")
        self.sent.append(command)
        lines = self.crossing.pop(command, []) + self.answers.get(command, _ANSWERS.get(command, ["OK"]))
        asyncio.get_running_loop().call_soon(self.urc, *lines)

    def urc(self, *lines: str) -> None:
        """The modem writes `lines` now (the client reads them at once, in this order)."""
        assert self._on_data is not None, "the client has not opened the port"
        self._on_data(b"".join(b"\r\n" + line.encode("ascii") + b"\r\n" for line in lines))

    def count(self, command: str) -> int:
        return self.sent.count(command)

    async def aclose(self) -> None:
        pass


async def loop_until(condition: Callable[[], bool], what: str, *, turns: int = 2000) -> None:
    """Let the loop turn (no wall time passes) until `condition()` holds; a hang fails with `what`."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened within {turns} loop turns: {what}")
