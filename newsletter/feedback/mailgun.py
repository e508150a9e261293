"""Mailgun's events webhook: the HMAC checked, the token used once, the event as a signal.

Mailgun signs ``timestamp + token`` with the HTTP webhook signing key (HMAC-SHA256, hex). A
captured request could be posted again: the timestamp must be recent and the token is claimed
in Redis for twice that window. Without Redis the token is not remembered, and the database
still records each ``event-data.id`` once, so a replay changes nothing there either.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

import redis

from newsletter.core.config import Settings
from newsletter.feedback.ses import text
from newsletter.feedback.signals import Signal
from newsletter.mail import verp
from newsletter.models import SignalKind

log = logging.getLogger(__name__)
SOURCE = "webhook:mailgun"
MAX_AGE = 15 * 60  #: seconds either way
_FAILED = {"permanent": SignalKind.BOUNCE_HARD, "temporary": SignalKind.BOUNCE_SOFT}


class Refused(Exception):
    """Not believed (403) or malformed (400)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def verify(key: str, body: Any, now: float | None = None) -> dict:
    """The signature block if the HMAC matches and the timestamp is recent; else :class:`Refused`."""
    if not isinstance(body, dict):
        raise Refused("the body is not a Mailgun event (a JSON object)", 400)
    sig = body.get("signature")
    if not isinstance(sig, dict):
        raise Refused("signature is missing", 400)
    for field in ("timestamp", "token", "signature"):
        if not isinstance(sig.get(field), str | int) or isinstance(sig.get(field), bool):
            raise Refused(f"signature.{field} is missing", 400)
    if not isinstance(body.get("event-data"), dict):
        raise Refused("event-data is missing", 400)
    timestamp, token = str(sig["timestamp"]), str(sig["token"])
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    offered = [str(sig["signature"]), str(sig.get("parent-signature") or "")]
    if not any(hmac.compare_digest(expected.encode(), s.encode("utf-8", "replace")) for s in offered):
        raise Refused("bad signature")
    try:
        age = (time.time() if now is None else now) - float(timestamp)
    except ValueError:
        raise Refused("signature.timestamp is not a number", 400) from None
    if abs(age) > MAX_AGE:
        raise Refused("signature.timestamp is outside the accepted window (a replay or a wrong clock)")
    return sig


def _token_key(token: str) -> str:
    return f"nl:mailgun-token:{hashlib.sha256(token.encode()).hexdigest()}"


def claim_token(conn: redis.Redis, token: str) -> bool | None:
    """True the first time, False for a reused token, None when Redis is down (logged)."""
    try:
        return bool(conn.set(_token_key(token), 1, nx=True, ex=2 * MAX_AGE))
    except redis.RedisError as exc:
        log.warning("Mailgun token not remembered (Redis: %s); event ids still make replays harmless", exc)
        return None


def release_token(conn: redis.Redis, token: str) -> None:
    """Forget a token whose event was not recorded, so that Mailgun's retry is accepted."""
    try:
        conn.delete(_token_key(token))
    except redis.RedisError:
        pass


def signal(settings: Settings, event: dict) -> Signal | None:
    """The signal one event carries, or None for events we do not act on (opened, accepted...)."""
    name = event.get("event")
    event_id = text(event.get("id"), 255) if isinstance(event.get("id"), str) else None
    if not isinstance(name, str):
        raise Refused("event-data.event is missing", 400)
    if not event_id:
        raise Refused("event-data.id is missing", 400)
    if name == "failed":
        kind = _FAILED.get(event.get("severity"))
        if kind is None:
            raise Refused("event-data.severity is missing (permanent or temporary)", 400)
    elif name == "complained":
        kind = SignalKind.COMPLAINT
    elif name == "delivered":
        kind = SignalKind.DELIVERED
    else:
        return None
    envelope = event.get("envelope") if isinstance(event.get("envelope"), dict) else {}
    sender = envelope.get("sender")
    ref = verp.read(settings, sender) if isinstance(sender, str) else None
    message = event.get("message") if isinstance(event.get("message"), dict) else {}
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    message_id = headers.get("message-id") if isinstance(headers.get("message-id"), str) else None
    status = event.get("delivery-status") if isinstance(event.get("delivery-status"), dict) else {}
    code = status.get("code")
    parts = [str(p) for p in (status.get("message"), status.get("description")) if p]
    return Signal(
        kind,
        SOURCE,
        verp=ref,
        message_id=None if ref else text(message_id, 998),
        recipient=text(event.get("recipient"), 320),
        status_code=text(code, 16),
        diagnostic=text("; ".join(parts), 2000),
        provider_event_id=event_id,
    )
