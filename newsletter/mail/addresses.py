"""Address validation: email-validator decides, we store its normalised form."""

from __future__ import annotations

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
