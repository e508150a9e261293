"""HMAC-SHA256 for partner files and partner API requests; nonces against replays."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC

import redis

from newsletter.core import clock

FILE_CONTEXT = b"newsletter-partner-file/v1\n"
#: v2 signs the previous-exchange header too; v1 (the first release) did not, see ``check_signature``
REQUEST_CONTEXT = "newsletter-partner-request/v2"
REQUEST_CONTEXT_V1 = "newsletter-partner-request/v1"
#: a request's timestamp may differ from our clock by at most this many seconds
REQUEST_WINDOW = 300
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")

TIMESTAMP_HEADER = "X-Partner-Timestamp"
NONCE_HEADER = "X-Partner-Nonce"
SIGNATURE_HEADER = "X-Partner-Signature"
#: the id of the sender's export the caller imported last (only what changed since travels)
PREVIOUS_HEADER = "X-Partner-Previous-Exchange"


def file_mac(secret: str):
    """A running HMAC for a file's bytes (header and records, exactly as written)."""
    return hmac.new(secret.encode("utf-8"), FILE_CONTEXT, hashlib.sha256)


def hash_mac(secret: str, email_hash: str) -> str:
    """The keyed hash of one suppressed address: HMAC-SHA256(secret, sha256 hex of the address)."""
    return hmac.new(secret.encode("utf-8"), email_hash.encode("ascii"), hashlib.sha256).hexdigest()


def request_signature(
    secret: str,
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    body_sha256: str,
    previous: str = "",
    *,
    version: int = 2,
) -> str:
    """HMAC-SHA256 of the request's parts, one per line; ``previous`` is the previous-exchange
    header's value exactly as sent ("" when there is none), covered from v2 on."""
    if version == 1:
        parts = [REQUEST_CONTEXT_V1, method.upper(), path, timestamp, nonce, body_sha256]
    else:
        parts = [REQUEST_CONTEXT, method.upper(), path, timestamp, nonce, previous, body_sha256]
    message = "\n".join(parts)
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def request_headers(
    secret: str, method: str, path: str, body: bytes = b"", previous: int | str | None = None
) -> dict[str, str]:
    """What a partner sends with a request (our own client and the tests use it too)."""
    timestamp = str(int(_epoch()))
    nonce = secrets.token_urlsafe(24)
    value = "" if previous is None else str(previous)
    signature = request_signature(
        secret, method, path, timestamp, nonce, hashlib.sha256(body).hexdigest(), value
    )
    headers = {TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce, SIGNATURE_HEADER: signature}
    if previous is not None:
        headers[PREVIOUS_HEADER] = value
    return headers


def _epoch() -> float:
    return clock.now().replace(tzinfo=UTC).timestamp()


class RequestRefused(Exception):
    """The request is not authentic, too old, or replayed; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 401, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        #: seconds, for a 429 (the Retry-After header)
        self.retry_after = retry_after


def check_timestamp(timestamp: str | None) -> None:
    if not timestamp or not timestamp.isdigit() or len(timestamp) > 12:
        raise RequestRefused(f"missing or malformed {TIMESTAMP_HEADER} (unix seconds)")
    if abs(_epoch() - int(timestamp)) > REQUEST_WINDOW:
        raise RequestRefused(f"{TIMESTAMP_HEADER} is outside the {REQUEST_WINDOW}-second window")


def check_nonce(nonce: str | None) -> None:
    if not nonce or not NONCE.fullmatch(nonce):
        raise RequestRefused(f"missing or malformed {NONCE_HEADER} (16 to 64 of A-Z a-z 0-9 _ -)")


def check_signature_shape(signature: str | None) -> None:
    """Before a body is read: a request that cannot be genuine is not worth reading."""
    if not signature or not SIGNATURE.fullmatch(signature.strip()):
        raise RequestRefused(f"missing or malformed {SIGNATURE_HEADER} (64 hex digits)")


def check_signature(
    secret: str,
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    body_sha256: str,
    signature: str | None,
    previous: str = "",
) -> int:
    """The version the signature matches: 2 (the previous-exchange header covered) or 1.

    A v1 signature (an engine of the first release) does not cover the header, so the caller
    must then act as if there were none (a full export); RequestRefused if neither matches.
    """
    given = (signature or "").strip().lower().encode("ascii", "replace")
    for version in (2, 1):
        expected = request_signature(
            secret, method, path, timestamp, nonce, body_sha256, previous, version=version
        )
        if hmac.compare_digest(expected.encode("ascii"), given):
            return version
    raise RequestRefused("bad signature")


def claim_nonce(conn: redis.Redis, partner_id: str, nonce: str) -> None:
    """Each nonce works once within (twice) the window; without Redis we refuse rather than risk replays."""
    try:
        fresh = conn.set(f"nl:partner-nonce:{partner_id}:{nonce}", 1, nx=True, ex=2 * REQUEST_WINDOW)
    except redis.RedisError:
        raise RequestRefused("replay protection is unavailable; try again later", status=503) from None
    if not fresh:
        raise RequestRefused("replayed request: this nonce was used already", status=409)
