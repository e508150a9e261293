"""Abuse limits against subscription bombing; counters live in Redis.

Redis being down must never lose a signup, so every check fails open and says so in
the log; the per-address cap then falls back to counting the outbox in SQL.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)


def hit(conn: redis.Redis, key: str, limit: int, window_seconds: int) -> bool | None:
    """Count one event in a fixed window; True if still within ``limit``, None if Redis is down."""
    try:
        pipe = conn.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, window_seconds, nx=True)
        count, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("rate limit %s not checked, Redis unavailable: %s", key, exc)
        return None
    return int(count) <= limit


def signup_allowed_from_ip(conn: redis.Redis, ip: str, rate: tuple[int, int]) -> bool:
    """Per-IP signup rate limit (fails open when Redis is down)."""
    limit, window = rate
    return hit(conn, f"nl:limit:signup-ip:{ip}", limit, window) is not False


def confirmation_allowed(conn: redis.Redis, mailbox_hash: str, limit: int) -> bool | None:
    """At most ``limit`` confirmation emails per mailbox per 24 hours, whatever the IP or spelling.

    ``mailbox_hash`` is ``addresses.mailbox_hash``: ``ann+1@`` and ``ann+2@`` share one count.
    """
    return hit(conn, f"nl:limit:confirm-mail:{mailbox_hash}", limit, 24 * 3600)
