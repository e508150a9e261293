"""Short signed tags for addresses and URLs: base 36 ids and an 80-bit HMAC, in lower case.

Used where a signature must be short and survive case folding (VERP local parts, click
links). Each use has its own purpose, hence its own key: a tag made for one purpose never
verifies for another. Old keys (``SECRET_KEY_FALLBACKS``) still verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

from newsletter.core.config import Settings

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
#: length of a tag's signature: 10 bytes of HMAC-SHA256 in base 32
MAC_LENGTH = 16


@lru_cache(maxsize=16)
def _key(secret: str, purpose: str) -> bytes:
    return hashlib.sha256(f"newsletter {purpose}\x00".encode() + secret.encode()).digest()


def _mac(secret: str, purpose: str, body: str) -> str:
    digest = hmac.new(_key(secret, purpose), body.encode(), hashlib.sha256).digest()[:10]
    return base64.b32encode(digest).decode().lower()


def base36(number: int) -> str:
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = _DIGITS[rest] + out
        if not number:
            return out


def sign(settings: Settings, purpose: str, body: str) -> str:
    """The signature of ``body`` for ``purpose`` under the current key."""
    return _mac(settings.secret_key, purpose, body)


def verifies(settings: Settings, purpose: str, body: str, mac: str) -> bool:
    """True if ``mac`` signs ``body`` for ``purpose`` under the current key or an old one."""
    return any(
        hmac.compare_digest(_mac(secret, purpose, body), mac)
        for secret in (settings.secret_key, *settings.secret_key_fallbacks)
    )
