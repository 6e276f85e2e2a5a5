"""A recorded drive replayed as a virtual SLCAN adapter on a pty.

    async with ReplayDevice("commute.blf", speed=2.0, loop=True) as device:
        ...point the agent at device.path: [sources.can] port = "<device.path>"...

The recording is read with python-can's log readers (`can.LogReader` picks the reader by suffix:
candump `.log`, Vector `.asc` and `.blf`, and the others python-can reads), streamed rather than
loaded, so an hour of bus traffic costs no memory. The adapter side is `SlcanSimulator`'s: the same
Lawicel command semantics, so an agent reads the recording exactly as it would a real adapter.

Timing is the recording's own: each frame is sent at its timestamp relative to the first frame,
divided by `speed`. The replay starts when a host first opens the channel and then runs on its own
clock, as a real bus does: frames that come due while the channel is closed are lost (counted as
missed), never sent as a burst afterwards. Looping starts the next pass one mean frame interval after
the last frame of the previous one, so the bus load stays even across the seam.

What SLCAN cannot carry is skipped with a count per kind: error frames, CAN FD frames (our codec and
most SLCAN firmware are classic CAN only), frames of another channel when one is chosen, and frames
that are not valid classic CAN (an 11-bit id above 0x7FF, more than 8 data bytes). Remote frames and
29-bit identifiers pass. A timestamp that goes backwards (merged multi-channel logs) is sent at once,
in file order, and counted.

`RecordingSchedule` is the sans-I/O core (which frames are due when); `ReplayDevice` the pty shell.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import TracebackType

import can

from hil.devices.slcan_sim import SlcanSimulator
from tcu.errors import ConfigError
from tcu.sources.slcan import TIMESTAMP_WRAP_MS, CanFrame, format_frame

_LOGGER = logging.getLogger(__name__)
_MAX_BURST = 1000  # frames per write: a fast replay still lets the session read the host's commands
_LONE_FRAME_GAP_S = 0.1  # loop seam of a one-message recording, which has no mean interval


class Skip(StrEnum):
    """Why a recorded message was not sent."""

    ERROR_FRAME = "error frame"
    CAN_FD = "CAN FD frame"
    OTHER_CHANNEL = "other channel"
    INVALID = "not classic CAN"


def to_slcan(message: can.Message, *, channel: str | None = None) -> CanFrame | Skip:
    """The SLCAN frame of one recorded message, or why it cannot be one."""
    if channel is not None and message.channel is not None and str(message.channel) != channel:
        return Skip.OTHER_CHANNEL
    if message.is_error_frame:
        return Skip.ERROR_FRAME
    if message.is_fd:
        return Skip.CAN_FD
    try:
        if message.is_remote_frame:
            # DLC 9..15 means 8 on classic CAN; a remote frame only states it.
            return CanFrame(
                can_id=message.arbitration_id, extended=message.is_extended_id, remote=True, dlc=min(message.dlc, 8)
            )
        return CanFrame(can_id=message.arbitration_id, data=bytes(message.data), extended=message.is_extended_id)
    except ValueError:
        return Skip.INVALID


def open_recording(path: str | os.PathLike[str]) -> Callable[[], Iterator[can.Message]]:
    """A function that reads the recording from its start, each call anew; checked once here, so a
    missing file or an unknown format is a ConfigError before any device starts."""
    where = Path(path)
    if not where.is_file():
        raise ConfigError(f"recording {where}: no such file")
    # python-can's BLFReader leaks its file when the header is wrong: check the signature first.
    if where.suffix.lower() == ".blf" and _head(where, 4) != b"LOGG":
        raise ConfigError(f"recording {where}: not a readable .blf file (no LOGG signature)")
    try:
        reader = can.LogReader(where)
    except ValueError as exc:  # python-can: no reader for this suffix
        raise ConfigError(f"recording {where}: {exc} (candump .log, Vector .asc and .blf are read)") from exc
    except OSError as exc:
        raise ConfigError(f"recording {where}: cannot read it: {exc.strerror or exc}") from exc
    except Exception as exc:  # a reader that parses its header at once (BLF) raises its own errors
        raise ConfigError(f"recording {where}: not a readable {where.suffix} file: {exc}") from exc
    reader.stop()

    def messages() -> Iterator[can.Message]:
        with can.LogReader(where) as recording:
            yield from recording

    return messages


def _head(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(size)
    except OSError as exc:
        raise ConfigError(f"recording {path}: cannot read it: {exc.strerror or exc}") from exc


@dataclass(slots=True)
class ReplayStats:
    """What a replay did, for the summary line and tests."""

    sent: int = 0  # frames written to the host
    missed: int = 0  # frames due while the channel was closed
    skipped: Counter[Skip] = field(default_factory=Counter)
    out_of_order: int = 0  # timestamps that went backwards, sent at once
    read_errors: int = 0  # passes cut short by a reader error
    passes: int = 0  # passes whose first frame has come due
    started_s: float | None = None  # bus time of the first channel open
    ended_s: float | None = None  # bus time the last frame came due (not looping)

    def describe(self, *, now_s: float | None = None) -> str:
        skipped = ", ".join(
            f"{count} {kind}{'s' if count != 1 else ''}" for kind, count in sorted(self.skipped.items())
        )
        end = self.ended_s if self.ended_s is not None else now_s
        duration = 0.0 if self.started_s is None or end is None else end - self.started_s
        parts = [
            f"{self.sent} frame(s) sent",
            f"skipped {skipped or 'none'}",
            f"{self.missed} missed while the channel was closed",
            f"{self.passes} pass(es)",
            f"{duration:.1f} s",
        ]
        if self.out_of_order:
            parts.append(f"{self.out_of_order} out-of-order timestamp(s)")
        if self.read_errors:
            parts.append(f"{self.read_errors} read error(s)")
        if self.started_s is None:
            parts.append("no host opened the channel")
        return "; ".join(parts)


class RecordingSchedule:
    """Which recorded frames are due when, on a bus clock in seconds (sans-I/O)."""

    def __init__(
        self,
        messages: Callable[[], Iterator[can.Message]],
        *,
        speed: float = 1.0,
        loop: bool = False,
        channel: str | None = None,
        name: str = "recording",
    ) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ConfigError(f"replay speed {speed!r}: must be a positive number (2.0 = twice as fast)")
        self._open = messages
        self.speed = speed
        self.loop = loop
        self.channel = channel
        self.name = name
        self.stats = ReplayStats()
        self._messages: Iterator[can.Message] | None = None
        self._next: tuple[float, CanFrame] | None = None
        self._next_opens_pass = False
        self.finished = False
        # the pass being read: its bus start, its first recorded timestamp, the latest relative time
        self._pass_start_s = 0.0
        self._origin: float | None = None
        self._last_rel = 0.0
        self._pass_messages = 0
        self._pass_frames = 0

    @property
    def started(self) -> bool:
        return self.stats.started_s is not None

    def start(self, now_s: float) -> None:
        """The first frame is due at `now_s`."""
        if self.started:
            return
        self.stats.started_s = now_s
        self._begin_pass(now_s)
        self._advance()

    def next_due_s(self) -> float | None:
        """Bus time of the next frame; None before `start` and after the end."""
        return None if self._next is None else self._next[0]

    def due(self, now_s: float, *, limit: int = _MAX_BURST) -> list[tuple[float, CanFrame]]:
        """Frames due by `now_s` (at most `limit`), each with the bus time it was due."""
        frames: list[tuple[float, CanFrame]] = []
        while self._next is not None and self._next[0] <= now_s and len(frames) < limit:
            frames.append(self._next)
            self.stats.passes += self._next_opens_pass
            self._advance()
        return frames

    def close(self) -> None:
        """Close the file being read (a generator holds it open)."""
        close = getattr(self._messages, "close", None)
        if close is not None:
            close()
        self._messages = None

    def _begin_pass(self, start_s: float) -> None:
        self.close()
        self._messages = self._open()
        self._pass_start_s = start_s
        self._origin = None
        self._last_rel = 0.0
        self._pass_messages = self._pass_frames = 0

    def _advance(self) -> None:
        """Peek the next sendable frame, counting what is skipped; loop or finish at the end."""
        self._next = None
        while self._messages is not None:
            message = self._read_one()
            if message is None:
                if not self._end_of_pass():
                    return
                continue
            self._pass_messages += 1
            at_s = self._pass_start_s + self._relative(message.timestamp) / self.speed
            frame = to_slcan(message, channel=self.channel)
            if isinstance(frame, Skip):
                self.stats.skipped[frame] += 1
                continue
            self._pass_frames += 1
            self._next = (at_s, frame)
            self._next_opens_pass = self._pass_frames == 1
            return

    def _read_one(self) -> can.Message | None:
        assert self._messages is not None
        try:
            return next(self._messages)
        except StopIteration:
            return None
        except Exception as exc:  # python-can's readers raise their own parse errors on a damaged file
            self.stats.read_errors += 1
            _LOGGER.error("%s: reading stopped after %d message(s): %s", self.name, self._pass_messages, exc)
            return None

    def _relative(self, timestamp: float) -> float:
        """Seconds since the pass's first message, never going backwards."""
        stamp = float(timestamp)
        if self._origin is None and math.isfinite(stamp):
            self._origin = stamp
        relative = stamp - self._origin if self._origin is not None and math.isfinite(stamp) else math.nan
        if not relative >= self._last_rel:  # also NaN
            self.stats.out_of_order += 1
            return self._last_rel
        self._last_rel = relative
        return relative

    def _end_of_pass(self) -> bool:
        """Start the next pass if looping; returns whether there is one."""
        end_s = self._pass_start_s + self._last_rel / self.speed
        if not self.loop or self._pass_frames == 0:
            if self._pass_frames == 0:
                _LOGGER.warning("%s: no frame in this pass that SLCAN can carry; the replay ends", self.name)
            self.close()
            self.finished = True
            self.stats.ended_s = end_s
            return False
        gap = self._last_rel / (self._pass_messages - 1) if self._pass_messages > 1 else 0.0
        self._begin_pass(end_s + (gap if gap > 0 else _LONE_FRAME_GAP_S) / self.speed)
        return True


class ReplayDevice(SlcanSimulator):
    """A virtual SLCAN adapter on a bus that replays a recording; see the module docstring."""

    def __init__(
        self,
        recording: str | os.PathLike[str],
        *,
        speed: float = 1.0,
        loop: bool = False,
        channel: str | None = None,
        link_path: str | None = None,
    ) -> None:
        super().__init__(link_path=link_path)
        self.name = "SLCAN replay"
        self.recording = Path(recording)
        self.schedule = RecordingSchedule(
            open_recording(self.recording), speed=speed, loop=loop, channel=channel, name=self.recording.name
        )
        self.finished = asyncio.Event()  # the recording has ended (never while looping)

    @property
    def stats(self) -> ReplayStats:
        return self.schedule.stats

    def summary(self) -> str:
        """One line: frames sent, skipped by kind, duration."""
        try:
            now: float | None = self.now_s()
        except RuntimeError:  # no running loop: the replay is over anyway
            now = None
        return f"{self.recording.name}: {self.stats.describe(now_s=now)}"

    def pending_frames(self) -> bytes:
        schedule = self.schedule
        now = self.now_s()
        if self.channel.open and not schedule.started:
            schedule.start(now)
            _LOGGER.info("%s: replay starts (speed %g, %s)", self.recording, schedule.speed, _looping(schedule))
        due = schedule.due(now)
        if schedule.finished and not self.finished.is_set():
            self.finished.set()
            _LOGGER.info("%s: replay ended: %s", self.recording, self.summary())
        if not due:
            return b""
        if not self.channel.open:
            schedule.stats.missed += len(due)
            return b""
        schedule.stats.sent += len(due)
        if not self.channel.timestamps:
            return b"".join(format_frame(frame) for _at, frame in due)
        opened = self.channel.opened_at
        return b"".join(
            format_frame(replace(frame, timestamp_ms=int(max(0.0, at - opened) * 1000) % TIMESTAMP_WRAP_MS))
            for at, frame in due
        )

    def _until_next_frame(self) -> float | None:
        # Once started the recording runs whether or not the channel is open: wake up to drop what is missed.
        due = self.schedule.next_due_s()
        return None if due is None else max(0.0, due - self.now_s())

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            self.schedule.close()


def _looping(schedule: RecordingSchedule) -> str:
    return "looped" if schedule.loop else "once"
