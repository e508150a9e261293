"""Address validation: email-validator decides, we store its normalised form."""

from __future__ import annotations

import hashlib

from email_validator import EmailNotValidError, validate_email

MAX_INPUT_LENGTH = 320


class InvalidAddress(ValueError):
    """The address cannot be used; the message is safe to show to the person."""


def normalize_address(raw: str, *, check_deliverability: bool = False) -> str:
    """Return the normalised address or raise InvalidAddress with a friendly reason."""
    raw = (raw or "").strip()
    if not raw:
        raise InvalidAddress("Please enter your email address.")
    if len(raw) > MAX_INPUT_LENGTH:
        raise InvalidAddress("That email address is too long.")
    try:
        result = validate_email(raw, check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    # RFC 5321 limits the local part to 64 octets; some relays refuse longer ones.
    if len(result.local_part.encode("utf-8")) > 64:
        raise InvalidAddress("The part before the @-sign is too long.")
    return result.normalized


#: Providers that ignore dots in the local part; googlemail.com is the same mailbox as gmail.com.
_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def mailbox_key(address: str) -> str:
    """The mailbox behind an address, whatever its spelling: what per-address limits count.

    Lower-cased; sub-addressing (``+tag``) removed; for Gmail also the dots, and
    googlemail.com is gmail.com. ``Ann.Lee+news@GoogleMail.com`` -> ``annlee@gmail.com``.
    """
    local, _, domain = address.strip().lower().rpartition("@")
    if not local:
        return address.strip().lower()
    local = local.split("+", 1)[0] or local
    if domain in _DOTLESS_DOMAINS:
        domain = _DOTLESS_DOMAINS[domain]
        local = local.replace(".", "") or local
    return f"{local}@{domain}"


def mailbox_hash(address: str) -> str:
    """SHA-256 of ``mailbox_key``: how counters and the outbox name a mailbox without the address."""
    return hashlib.sha256(mailbox_key(address).encode("utf-8")).hexdigest()
