"""Abuse limits against subscription bombing; counters live in Redis.

Redis being down must never lose a signup, so every check fails open and says so in
the log; the per-address cap then falls back to counting the outbox in SQL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)
#: the per-mailbox cap counts confirmation emails per day
CONFIRM_WINDOW_SECONDS = 24 * 3600


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


def confirmation_allowed(conn: redis.Redis, mailbox_hash: str, limit: int) -> bool | None:
    """At most ``limit`` confirmation emails per mailbox per 24 hours, whatever the IP or spelling.

    ``mailbox_hash`` is ``addresses.mailbox_hash``: ``ann+1@`` and ``ann+2@`` share one count.
    """
    return hit(conn, f"nl:limit:confirm-mail:{mailbox_hash}", limit, CONFIRM_WINDOW_SECONDS)


def confirmations_allowed(conn: redis.Redis, mailbox_hashes: list[str], limit: int) -> list[bool] | None:
    """``confirmation_allowed`` for many mailboxes in order, in one round trip; None if Redis is down.

    A mailbox named twice is counted twice, the second verdict after the first (as one by one).
    """
    try:
        pipe = conn.pipeline(transaction=False)
        for mailbox_hash in mailbox_hashes:
            key = f"nl:limit:confirm-mail:{mailbox_hash}"
            pipe.incr(key)
            pipe.expire(key, CONFIRM_WINDOW_SECONDS, nx=True)
        replies = pipe.execute()
    except redis.RedisError as exc:
        log.warning("%d confirmation counts not checked, Redis unavailable: %s", len(mailbox_hashes), exc)
        return None
    return [int(count) <= limit for count in replies[::2]]


#: The per-IP count, then (only if the IP is within its limit) the mailbox's, in one round trip.
_SIGNUP = """
local ip = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2], 'NX')
if ip > tonumber(ARGV[1]) or #KEYS < 2 then return {ip, -1} end
local mailbox = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3], 'NX')
return {ip, mailbox}
"""


@dataclass(frozen=True)
class SignupVerdict:
    """What one signup POST may do: answered at all (the IP), and mail the mailbox (the cap).

    ``mail`` is None when it was not counted (Redis down, no valid address, the IP refused):
    the signup then counts the outbox in SQL.
    """

    ip_allowed: bool
    mail: bool | None


def check_signup(
    conn: redis.Redis, ip: str, rate: tuple[int, int], mailbox_hash: str | None, confirmations: int
) -> SignupVerdict:
    """The per-IP signup limit and, for a valid address, ``confirmation_allowed``, in one round trip.

    The mailbox is counted only when the IP is within its limit, as when they ran one after the
    other; fails open (logged) when Redis is down.
    """
    limit, window = rate
    keys = [f"nl:limit:signup-ip:{ip}"]
    if mailbox_hash is not None:
        keys.append(f"nl:limit:confirm-mail:{mailbox_hash}")
    try:
        ip_count, mailbox_count = conn.register_script(_SIGNUP)(
            keys=keys, args=[limit, window, CONFIRM_WINDOW_SECONDS]
        )
    except redis.RedisError as exc:
        log.warning("signup limits not checked, Redis unavailable: %s", exc)
        return SignupVerdict(True, None)
    if int(ip_count) > limit:
        return SignupVerdict(False, None)
    return SignupVerdict(True, None if int(mailbox_count) < 0 else int(mailbox_count) <= confirmations)


def give_back_confirmation(conn: redis.Redis, mailbox_hash: str) -> None:
    """Undo a mailbox count taken by ``check_signup`` for a signup that sends nothing (suppressed)."""
    try:
        conn.decr(f"nl:limit:confirm-mail:{mailbox_hash}")
    except redis.RedisError as exc:
        log.warning("confirmation count of a suppressed address not given back (Redis: %s)", exc)
