"""CarData times on the wire: ISO 8601 in UTC with a `Z`, to the millisecond, as BMW's messages carry them."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso_z"]


def iso_z(moment: datetime) -> str:
    """`2024-05-01T12:00:00.250Z`. A naive time is refused: every time in the backend is aware UTC."""
    if moment.tzinfo is None:
        raise ValueError(f"a CarData time must be timezone-aware, got naive {moment!r}")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
