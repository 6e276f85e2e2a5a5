"""What one vehicle signal's value may be on the wire (docs/protocol.md)."""

from __future__ import annotations

# A list-valued VSS signal (string[], e.g. Vehicle.OBD.DTCList) is a tuple: a Signal is immutable, and
# a list shared with a subscriber could change under it. The bounds are what the backend accepts
# (docs/protocol.md); a source with more to say must choose what to send.
SignalValue = float | int | bool | str | tuple[str, ...]
MAX_LIST_ITEMS = 128
MAX_LIST_ITEM_CHARS = 32
