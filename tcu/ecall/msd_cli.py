"""`tcu ecall msd --json FILE [--version N]` and `tcu ecall decode HEX`, as plain functions.

They take the strings the command line gave and return the text to print; errors are MsdError with a
reason to show the user. tcu/cli.py wires them into its argument parser.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from telematics_wire.errors import MsdError
from telematics_wire.msd import MsdCodec, default_codec, msd_from_json, msd_to_json


def msd_command(
    json_file: str, *, version: int = 2, explicit_propulsion: bool = False, stdin: TextIO | None = None
) -> str:
    """Encode the MSD described in `json_file` ("-" for standard input); upper-case hex, as modems take it."""
    try:
        text = (stdin or sys.stdin).read() if json_file == "-" else Path(json_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MsdError(f"cannot read the MSD JSON file {json_file}: {exc}") from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MsdError(f"{json_file} is not valid JSON: {exc}") from exc
    codec = MsdCodec(explicit_propulsion_defaults=True) if explicit_propulsion else default_codec()
    return codec.encode(msd_from_json(obj), version).hex().upper()


def decode_command(hex_text: str) -> str:
    """Decode an MSD given in hex (spaces, colons and a 0x prefix allowed) into indented JSON."""
    cleaned = "".join(hex_text.split()).replace(":", "")
    cleaned = cleaned.removeprefix("0x").removeprefix("0X")
    try:
        data = bytes.fromhex(cleaned)
    except ValueError:
        raise MsdError(f"{hex_text!r} is not hexadecimal (expected e.g. 0225 1C06…)") from None
    return json.dumps(msd_to_json(default_codec().decode(data)), indent=2)
