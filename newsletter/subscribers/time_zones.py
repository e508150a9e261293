"""The time zones a subscriber may choose: the common ones first, then every other real place.

Only IANA zones named after a region and a place (``Europe/Berlin``) are offered, plus ``UTC``:
no ``Factory``, ``localtime``, ``posixrules``, ``Etc/GMT+5`` or legacy aliases (``US/Eastern``),
which tzdata keeps for old systems and no person would look for. A zone stored before (from an
import, say) stays selectable for its subscriber, so saving the form never fails on it.
"""

from __future__ import annotations

import zoneinfo
from functools import lru_cache

DEFAULT = "UTC"
#: where most of a European or American store's customers live; the browser's guess usually is one
COMMON = (
    "UTC",
    "Europe/London",
    "Europe/Dublin",
    "Europe/Lisbon",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Amsterdam",
    "Europe/Brussels",
    "Europe/Zurich",
    "Europe/Vienna",
    "Europe/Madrid",
    "Europe/Rome",
    "Europe/Stockholm",
    "Europe/Warsaw",
    "Europe/Athens",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Toronto",
    "America/Mexico_City",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
_REGIONS = frozenset(
    {"Africa", "America", "Antarctica", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific"}
)


@lru_cache(maxsize=1)
def others() -> tuple[str, ...]:
    """Every other region/place zone, in name order."""
    common = set(COMMON)
    return tuple(
        sorted(z for z in zoneinfo.available_timezones() if z.split("/")[0] in _REGIONS and z not in common)
    )


def label(zone: str) -> str:
    """``America/New_York`` as a person reads it: ``America / New York``."""
    return zone.replace("_", " ").replace("/", " / ")


def groups(current: str | None) -> tuple[list[str], list[str]]:
    """(common, others) for a subscriber whose stored zone is ``current``; a stored zone this list
    would leave out (a legacy alias) is kept, first among the common ones."""
    common = list(COMMON)
    if current and current not in common and current not in others() and is_zone(current):
        common.insert(0, current)
    return common, list(others())


def is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True
