"""Signed links, one salt per purpose, with key rotation.

``SECRET_KEY_FALLBACKS`` keeps links signed with an old key working: itsdangerous
signs with the last key of the list and accepts any of them.
"""

from __future__ import annotations

import enum
import functools
from datetime import UTC
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from newsletter.core import clock
from newsletter.core.config import Settings


class Purpose(enum.StrEnum):
    CONFIRM = "newsletter.confirm"
    UNSUBSCRIBE = "newsletter.unsubscribe"
    PREFERENCES = "newsletter.preferences"
    EARLY_ACCESS = "newsletter.early-access"
    ORDER_INVITE = "newsletter.order-invite"


class TokenError(Exception):
    """The token is unusable.

    ``expired``: genuine but too old; ``gone``: genuine, but the person it was issued for is
    no longer on file (erased); otherwise tampered, truncated or made for another purpose.
    """

    def __init__(self, message: str, *, expired: bool = False, gone: bool = False, payload: Any = None):
        super().__init__(message)
        self.expired = expired
        self.gone = gone
        self.payload = payload
        #: an expired link's own payload (``links.read_link`` puts the subscriber in ``payload``)
        self.link_payload: dict = {}


class _ClockSigner(TimestampSigner):
    """Timestamps from the engine's clock, so expiry follows ``clock.travel`` in tests."""

    def get_timestamp(self) -> int:
        return int(clock.now().replace(tzinfo=UTC).timestamp())


def _serializer(settings: Settings, purpose: Purpose) -> URLSafeTimedSerializer:
    return _cached_serializer(settings.secret_key, settings.secret_key_fallbacks, purpose)


@functools.lru_cache(maxsize=64)
def _cached_serializer(key: str, fallbacks: tuple[str, ...], purpose: Purpose) -> URLSafeTimedSerializer:
    # Built once per key set and purpose: a campaign makes three links per recipient.
    return URLSafeTimedSerializer([*reversed(fallbacks), key], salt=purpose.value, signer=_ClockSigner)


def make_token(settings: Settings, purpose: Purpose, payload: Any) -> str:
    return _serializer(settings, purpose).dumps(payload)


def read_token(settings: Settings, purpose: Purpose, token: str, max_age_seconds: int | None) -> Any:
    """Return the payload, or raise TokenError (tampered, wrong purpose, or expired)."""
    serializer = _serializer(settings, purpose)
    try:
        return serializer.loads(token, max_age=max_age_seconds)
    except SignatureExpired as exc:
        # The signature is genuine, so the payload can be trusted to offer a new link.
        try:
            payload = serializer.load_payload(exc.payload)
        except BadSignature:
            payload = None
        raise TokenError("this link has expired", expired=True, payload=payload) from None
    except BadSignature:
        raise TokenError("this link is not valid") from None
