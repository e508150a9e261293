"""VERP: each message's Return-Path names the row that sent it, signed, so a bounce needs no trust.

``bounces@store.example`` becomes ``bounces+d1k2-7hq3mzx0b4rta9cq@store.example`` for delivery
row 1k2 (base 36; ``o`` for an outbox row). The tag is an HMAC of the kind and id under the
secret key (old keys still verify), cut to 16 base-32 characters (80 bits), in lower case
because some MTAs fold the case of local parts. A bounce whose tag does not verify names
nothing: it cannot make the engine suppress somebody else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from newsletter.core import tags
from newsletter.core.config import Settings

DELIVERY = "d"  #: a campaign delivery row (deliveries.id)
OUTBOX = "o"  #: a transactional email (outbox_emails.id)
_PURPOSE = "verp"
_TAG = re.compile(r"([do])([0-9a-z]{1,13})-([a-z2-7]{16})")


@dataclass(frozen=True, slots=True)
class VerpRef:
    """What a verified VERP tag names: ``kind`` (DELIVERY or OUTBOX) and the row's id."""

    kind: str
    row_id: int


def tag(settings: Settings, kind: str, row_id: int) -> str:
    """The signed tag of one row, e.g. ``d1k2-7hq3mzx0b4rta9cq``."""
    body = f"{kind}{tags.base36(row_id)}"
    return f"{body}-{tags.sign(settings, _PURPOSE, body)}"


def return_path(settings: Settings, kind: str, row_id: int) -> str | None:
    """The VERP envelope sender of one message, or None when no BOUNCE_ADDRESS is set."""
    if not settings.bounce_address:
        return None
    local, _, domain = settings.bounce_address.rpartition("@")
    return f"{local}+{tag(settings, kind, row_id)}@{domain}"


def read(settings: Settings, address: str) -> VerpRef | None:
    """The row a VERP address (or bare tag) names, if its signature verifies; else None."""
    local = address.strip().strip("<>").rpartition("@")[0] or address.strip()
    match = _TAG.search(local.lower().rpartition("+")[2])
    if match is None:
        return None
    kind, number, mac = match.groups()
    return (
        VerpRef(kind, int(number, 36)) if tags.verifies(settings, _PURPOSE, f"{kind}{number}", mac) else None
    )
