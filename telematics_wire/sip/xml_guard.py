"""XML from the network parsed with defusedxml, bounded: no DTD, no entities, no external references, at
most `max_bytes` and `MAX_DEPTH` levels. Every failure is a `SipError` naming what was refused.
"""

from __future__ import annotations

from typing import Final
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from telematics_wire.errors import SipError

MAX_DEPTH: Final = 32  # PIDF-LO and control blocks nest six or seven levels; far deeper is an attack


def parse_xml(data: bytes, *, what: str, max_bytes: int) -> Element:
    if not isinstance(data, bytes):
        raise SipError(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise SipError(f"{what} of {len(data)} bytes exceeds {max_bytes}")
    try:
        root: Element = SafeElementTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise SipError(f"{what} refused: {type(exc).__name__} (DTDs and entities are not accepted)") from exc
    except ParseError as exc:
        raise SipError(f"{what} is not well-formed XML: {exc}") from exc
    except (ValueError, LookupError) as exc:  # e.g. an encoding declaration Python does not know (LookupError)
        raise SipError(f"{what} cannot be read as XML: {exc}") from exc
    _check_depth(root, what)
    return root


def _check_depth(root: Element, what: str) -> None:
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SipError(f"{what} nests deeper than {MAX_DEPTH} elements")
        stack.extend((child, depth + 1) for child in element)


def qualified(namespace: str, name: str) -> str:
    """ElementTree's `{namespace}name` spelling of a qualified name."""
    return f"{{{namespace}}}{name}"
