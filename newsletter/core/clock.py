"""The one clock of the engine, so tests can move time (expiry, caps, waves)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def now() -> datetime:
    """Current UTC time as a naive datetime (how every table stores it)."""
    return (datetime.now(UTC) + _offset).replace(tzinfo=None)


def travel(delta: timedelta) -> None:
    """Move the clock forward (tests only)."""
    global _offset
    _offset += delta


def reset() -> None:
    """Undo every ``travel`` (tests only)."""
    global _offset
    _offset = timedelta(0)
