"""Argument types shared by the backend's command-line parsers: a mistyped date gets a plain answer."""

from __future__ import annotations

import argparse
from datetime import date, datetime


def calendar_date(text: str) -> date:
    """YYYY-MM-DD, or argparse's usage error naming the format (not Python's "fromisoformat")."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def moment(text: str) -> datetime:
    """An ISO 8601 time such as 2026-11-23T10:00Z."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time such as 2026-11-23T10:00Z, got {text!r}") from None
