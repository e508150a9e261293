"""Frequency caps and quiet hours, decided per recipient at send time.

The rules are pure functions of a send history; the atomic part lives in Redis: one sorted
set of send times per subscriber, checked and reserved by a Lua script, for a whole batch
in one pipeline. Redis is not the truth: ``rebuild`` refills the sets from the delivery
ledger when Redis lost them, and a lost reservation can only make a cap stricter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.core.config import Settings
from newsletter.models import Delivery, DeliveryState, Frequency

log = logging.getLogger(__name__)

Rule = tuple[int, int]  #: at most COUNT sends per WINDOW seconds

#: The subscriber's own choice from the preference centre, on top of the store's rules.
FREQUENCY_RULES: dict[Frequency, list[Rule]] = {
    Frequency.ANY: [],
    Frequency.WEEKLY: [(1, 7 * 86400)],
    Frequency.MONTHLY: [(1, 30 * 86400)],
}
READY_KEY = "nl:caps:ready"


def key_for(subscriber_id: int) -> str:
    return f"nl:caps:{subscriber_id}"


@dataclass(frozen=True)
class Policy:
    rules: list[Rule]
    quiet_hours: tuple[int, int] | None  #: minutes after local midnight (start, end)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(list(settings.marketing_caps), settings.quiet_hours)

    def rules_for(self, frequency: Frequency) -> list[Rule]:
        return self.rules + FREQUENCY_RULES[frequency]


# --- pure rules -----------------------------------------------------------------------------


def earliest_by_rules(history: Sequence[datetime], rules: Iterable[Rule], at: datetime) -> datetime:
    """The earliest moment >= ``at`` at which one more send keeps every rule.

    A rule (n, w) holds at t if fewer than n sends fall in (t - w, t]. Sends only leave
    windows as t grows, so the answer is the latest of the per-rule answers.
    """
    earliest = at
    ordered = sorted(history)
    for count, window in rules:
        recent = [s for s in ordered if s > at - timedelta(seconds=window)]
        if len(recent) >= count:
            earliest = max(earliest, recent[len(recent) - count] + timedelta(seconds=window))
    return earliest


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def outside_quiet_hours(at: datetime, time_zone: str | None, quiet: tuple[int, int] | None) -> datetime:
    """``at`` if it is not quiet time for the subscriber, else the end of their quiet hours (UTC)."""
    if quiet is None:
        return at
    start, end = quiet
    local = at.replace(tzinfo=UTC).astimezone(zone(time_zone))
    minute = local.hour * 60 + local.minute
    in_quiet = (start <= minute or minute < end) if start > end else (start <= minute < end)
    if not in_quiet:
        return at
    end_local = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
    if end_local <= local:
        end_local += timedelta(days=1)
    # Rebuild from the wall clock so a DST change inside the night is honoured.
    end_local = datetime(
        end_local.year, end_local.month, end_local.day, end // 60, end % 60, tzinfo=zone(time_zone)
    )
    return end_local.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Verdict:
    """send now, or wait until ``at``, or skip for ``reason``."""

    send: bool
    at: datetime | None = None
    reason: str | None = None


def decide(earliest: datetime, now: datetime, deadline: datetime | None, why: str) -> Verdict:
    if earliest <= now:
        return Verdict(True)
    if deadline is not None and earliest >= deadline:
        return Verdict(False, None, f"{why}: next allowed {earliest:%Y-%m-%d %H:%M} UTC, after the deadline")
    return Verdict(False, earliest, why)


# --- Redis: atomic check-and-reserve across workers --------------------------------------------

#: KEYS: the subscribers' sets; ARGV: now_ms, then per key: member, number of rules, and that
#: many pairs of (count, window_ms). Returns per key 0 after reserving, or the earliest allowed
#: time in ms. One call for a whole chunk of a batch (a call per recipient cost more in the
#: client than the script in Redis); each subscriber is checked and reserved as before.
#: Only rows never handed to the relay are reserved (queued, deferred), so a place the same
#: delivery still holds is a leftover of an attempt that sent nothing: it never counts against it.
_RESERVE = """
local now = tonumber(ARGV[1])
local results = {}
local a = 2
for k = 1, #KEYS do
  local key, member, rules = KEYS[k], ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  redis.call('ZREM', key, member)
  local earliest = 0
  local longest = 0
  for i = 1, rules do
    local count = tonumber(ARGV[a])
    local window = tonumber(ARGV[a + 1])
    a = a + 2
    if window > longest then longest = window end
    local inside = redis.call('ZCOUNT', key, '(' .. (now - window), '+inf')
    if inside >= count then
      local oldest = redis.call('ZRANGEBYSCORE', key, '(' .. (now - window), '+inf',
                                'WITHSCORES', 'LIMIT', inside - count, 1)
      local t = tonumber(oldest[2]) + window
      if t > earliest then earliest = t end
    end
  end
  if earliest > 0 then
    results[k] = earliest
  else
    -- keep 30 days of history even without rules, so caps set later see recent sends
    if longest < 2592000000 then longest = 2592000000 end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - longest))
    redis.call('ZADD', key, now, member)
    redis.call('PEXPIRE', key, longest)
    results[k] = 0
  end
end
return results
"""
#: subscribers per script call: bounds how long one call keeps Redis busy
RESERVE_CHUNK = 500


def _ms(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


def reserve_batch(
    conn: redis.Redis, now: datetime, requests: Sequence[tuple[int, str, list[Rule]]]
) -> list[datetime | None]:
    """For each (subscriber_id, member, rules): None if reserved now, else the earliest allowed time.

    One round trip for the whole batch; each script runs atomically, so two workers can
    never both take the last place under a cap.
    """
    script = conn.register_script(_RESERVE)
    pipe = conn.pipeline(transaction=False)
    for start in range(0, len(requests), RESERVE_CHUNK):
        keys: list[str] = []
        args: list[int | str] = [_ms(now)]
        for subscriber_id, member, rules in requests[start : start + RESERVE_CHUNK]:
            keys.append(key_for(subscriber_id))
            args += [member, len(rules)]
            for count, window in rules:
                args += [count, window * 1000]
        script(keys=keys, args=args, client=pipe)
    return [None if result == 0 else _from_ms(int(result)) for chunk in pipe.execute() for result in chunk]


def release(conn: redis.Redis, subscriber_id: int, member: str) -> None:
    """Give back a reservation whose message was not sent after all."""
    conn.zrem(key_for(subscriber_id), member)


def release_many(conn: redis.Redis, places: Iterable[tuple[int, str]]) -> None:
    """Give back the reservations of (subscriber_id, member) pairs, in one round trip."""
    pipe = conn.pipeline(transaction=False)
    for subscriber_id, member in places:
        pipe.zrem(key_for(subscriber_id), member)
    pipe.execute()


def hold(conn: redis.Redis, subscriber_id: int, member: str, at: datetime) -> None:
    """Count a message that may have been sent (``uncertain``) as a send at ``at``, if not counted yet."""
    key = key_for(subscriber_id)
    pipe = conn.pipeline(transaction=False)
    pipe.zadd(key, {member: _ms(at)}, nx=True)
    keep = 30 * 86400 * 1000  # at least as long as a reservation keeps its history
    pipe.pexpire(key, keep, nx=True)  # a set this call created
    pipe.pexpire(key, keep, gt=True)  # a set that would expire sooner
    pipe.execute()


def ensure_counters(conn: redis.Redis, session: Session, longest_window: int, now: datetime) -> bool:
    """Rebuild every subscriber's set from the ledger if Redis lost them; True if it rebuilt."""
    if conn.exists(READY_KEY):
        return False
    with conn.lock("nl:caps:rebuild", timeout=600, blocking_timeout=600):
        if conn.exists(READY_KEY):
            return False
        since = now - timedelta(seconds=longest_window)
        rows = session.execute(
            select(Delivery.id, Delivery.subscriber_id, Delivery.sent_at).where(
                Delivery.state.in_([DeliveryState.SENT, DeliveryState.UNCERTAIN]), Delivery.sent_at > since
            )
        )
        pipe = conn.pipeline(transaction=False)
        count = 0
        for delivery_id, subscriber_id, sent_at in rows:
            pipe.zadd(key_for(subscriber_id), {member_for(delivery_id): _ms(sent_at)})
            pipe.pexpire(key_for(subscriber_id), longest_window * 1000)
            count += 1
            if count % 5000 == 0:
                pipe.execute()
        pipe.set(READY_KEY, _ms(now))
        pipe.execute()
        log.info("cap counters rebuilt from %d sent deliveries", count)
        return True


def member_for(delivery_id: int) -> str:
    return f"d{delivery_id}"
