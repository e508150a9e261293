"""Signed links, one salt per purpose, with key rotation.

``SECRET_KEY_FALLBACKS`` keeps links signed with an old key working: itsdangerous
signs with the last key of the list and accepts any of them.
"""

from __future__ import annotations

import enum
import functools
import hmac
from datetime import UTC
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, Signer, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, want_bytes

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
    """Timestamps from the engine's clock, so expiry follows ``clock.travel`` in tests.

    itsdangerous derives the signing key (a SHA-1) and sets up an HMAC on every signature;
    a campaign signs three links per recipient, so both are made once per key and salt here.
    """

    def get_timestamp(self) -> int:
        return int(clock.now().replace(tzinfo=UTC).timestamp())

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        return _derived_key(key, self.salt, self.key_derivation, self.digest_method)

    def get_signature(self, value: str | bytes) -> bytes:
        mac = _keyed_mac(self.derive_key(), self.digest_method).copy()
        mac.update(want_bytes(value))
        return base64_encode(mac.digest())


@functools.lru_cache(maxsize=256)
def _derived_key(key: bytes, salt: bytes, derivation: str, digest: Any) -> bytes:
    return Signer(key, salt=salt, key_derivation=derivation, digest_method=digest).derive_key()


@functools.lru_cache(maxsize=256)
def _keyed_mac(key: bytes, digest: Any) -> hmac.HMAC:
    """An HMAC with the key set up, to be copied per signature."""
    return hmac.new(key, digestmod=digest)


class _Serializer(URLSafeTimedSerializer):
    """One signer per salt instead of one per call (a signer holds no state of a call), and no zlib.

    itsdangerous tries ``zlib.compress`` on every payload (~0.15 ms here, more than the rest of a
    signature) and keeps the result only if it is shorter, which for a link's few fields (an id,
    16 hex digits, a slug) it is only when the hex digits repeat. Then this token is the
    uncompressed form, a few bytes longer; otherwise the same bytes as stock itsdangerous.
    Reading is unchanged and takes both forms, so every link already sent still works, and
    these read with stock itsdangerous (tests/test_tokens_compat.py).
    """

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(want_bytes(self.serializer.dumps(obj, **self.serializer_kwargs)))

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        signers = self.__dict__.setdefault("_signers", {})
        if salt not in signers:
            signers[salt] = super().make_signer(salt)
        return signers[salt]


def _serializer(settings: Settings, purpose: Purpose) -> URLSafeTimedSerializer:
    return _cached_serializer(settings.secret_key, settings.secret_key_fallbacks, purpose)


@functools.lru_cache(maxsize=64)
def _cached_serializer(key: str, fallbacks: tuple[str, ...], purpose: Purpose) -> URLSafeTimedSerializer:
    # Built once per key set and purpose: a campaign makes three links per recipient.
    return _Serializer([*reversed(fallbacks), key], salt=purpose.value, signer=_ClockSigner)


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
