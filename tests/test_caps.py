"""Frequency caps and quiet hours: pure rules, and the atomic reservation on a real Redis."""

from __future__ import annotations

import multiprocessing
from datetime import datetime, timedelta

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.campaigns import caps
from tests.conftest import REDIS_URL

T0 = datetime(2027, 3, 1, 12, 0)


def test_earliest_by_rules_examples():
    rules = [(1, 20 * 3600), (3, 7 * 86400)]
    assert caps.earliest_by_rules([], rules, T0) == T0
    assert caps.earliest_by_rules([T0 - timedelta(hours=2)], rules, T0) == T0 + timedelta(hours=18)
    three = [T0 - timedelta(days=d) for d in (1, 2, 3)]
    assert caps.earliest_by_rules(three, rules, T0) == T0 - timedelta(days=3) + timedelta(days=7)


@pytest.mark.parametrize(
    ("utc", "zone", "expected"),
    [
        (datetime(2027, 3, 1, 22, 0), "UTC", datetime(2027, 3, 2, 8, 0)),  # quiet: to 08:00 next morning
        (datetime(2027, 3, 1, 7, 59), "UTC", datetime(2027, 3, 1, 8, 0)),
        (datetime(2027, 3, 1, 12, 0), "UTC", datetime(2027, 3, 1, 12, 0)),  # daytime: now
        (datetime(2027, 3, 1, 12, 0), "Asia/Tokyo", datetime(2027, 3, 1, 23, 0)),  # 21:00 in Tokyo
        (datetime(2027, 3, 1, 3, 0), "America/New_York", datetime(2027, 3, 1, 13, 0)),  # 22:00 NY
        (datetime(2027, 3, 14, 5, 0), "America/New_York", datetime(2027, 3, 14, 12, 0)),  # DST night
        (datetime(2027, 3, 1, 12, 0), "Not/AZone", datetime(2027, 3, 1, 12, 0)),  # unknown: UTC
    ],
)
def test_quiet_hours_in_the_subscribers_time_zone(utc, zone, expected):
    assert caps.outside_quiet_hours(utc, zone, (21 * 60, 8 * 60)) == expected


def test_deadline_turns_a_deferral_into_a_skip_with_the_reason():
    deferred = caps.decide(T0 + timedelta(hours=3), T0, T0 + timedelta(days=1), "frequency cap")
    assert not deferred.send and deferred.at == T0 + timedelta(hours=3)
    skipped = caps.decide(T0 + timedelta(days=2), T0, T0 + timedelta(days=1), "frequency cap")
    assert skipped.at is None and skipped.reason.startswith("frequency cap: next allowed")


rule_sets = st.lists(
    st.tuples(st.integers(1, 4), st.sampled_from([3600, 20 * 3600, 7 * 86400, 30 * 86400])),
    min_size=1,
    max_size=3,
)
attempts = st.lists(st.integers(0, 60 * 86400), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(rules=rule_sets, offsets=attempts)
def test_reservations_never_break_any_rule(rules, offsets):
    """Property: whatever the rules and attempt times, accepted sends keep every rule."""
    conn = redis.Redis.from_url(REDIS_URL)
    conn.delete(caps.key_for(1))
    accepted: list[datetime] = []
    for n, offset in enumerate(sorted(offsets)):
        now = T0 + timedelta(seconds=offset)
        [earliest] = caps.reserve_batch(conn, now, [(1, f"m{n}", rules)])
        expected = caps.earliest_by_rules(accepted, rules, now)
        if earliest is None:
            assert expected == now
            accepted.append(now)
        else:
            assert earliest == expected > now  # Redis and the pure rules agree on when
    for count, window in rules:
        for moment in accepted:
            inside = [a for a in accepted if moment - timedelta(seconds=window) < a <= moment]
            assert len(inside) <= count
    conn.delete(caps.key_for(1))


def _hammer(url: str, worker: int, results) -> None:
    conn = redis.Redis.from_url(url)
    got = 0
    for n in range(200):
        [earliest] = caps.reserve_batch(conn, T0, [(7, f"w{worker}-{n}", [(3, 3600)])])
        got += earliest is None
    results.put(got)


def test_concurrent_workers_never_take_more_than_the_cap(redis_conn):
    results = multiprocessing.get_context("fork").Queue()
    procs = [
        multiprocessing.get_context("fork").Process(target=_hammer, args=(REDIS_URL, w, results))
        for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sum(results.get(timeout=5) for _ in procs) == 3
    assert redis_conn.zcard(caps.key_for(7)) == 3


def test_a_deliverys_leftover_place_never_counts_against_itself(redis_conn):
    """A row is reserved again only if it was never sent (queued, deferred): its old place is stale."""
    rules = [(1, 20 * 3600)]
    assert caps.reserve_batch(redis_conn, T0, [(7, "d1", rules)]) == [None]
    later = T0 + timedelta(minutes=5)
    assert caps.reserve_batch(redis_conn, later, [(7, "d1", rules)]) == [None]
    assert redis_conn.zrange(caps.key_for(7), 0, -1, withscores=True) == [(b"d1", caps._ms(later))]
    # another delivery to the same person is capped by it, as ever
    assert caps.reserve_batch(redis_conn, later, [(7, "d2", rules)]) == [later + timedelta(hours=20)]


def test_release_many_and_hold(redis_conn):
    rules = [(1, 20 * 3600)]
    caps.reserve_batch(redis_conn, T0, [(1, "d1", rules), (2, "d2", rules), (3, "d3", rules)])
    caps.release_many(redis_conn, [(1, "d1"), (2, "d2")])
    assert [redis_conn.zcard(caps.key_for(s)) for s in (1, 2, 3)] == [0, 0, 1]
    caps.hold(redis_conn, 3, "d3", T0 + timedelta(hours=1))  # already counted: its time stays
    caps.hold(redis_conn, 4, "d4", T0)  # not counted yet: now it is, and it expires
    assert redis_conn.zscore(caps.key_for(3), "d3") == caps._ms(T0)
    assert redis_conn.zscore(caps.key_for(4), "d4") == caps._ms(T0)
    assert 0 < redis_conn.pttl(caps.key_for(4)) <= 30 * 86400 * 1000
    assert caps.reserve_batch(redis_conn, T0, [(4, "d5", rules)]) == [T0 + timedelta(hours=20)]
