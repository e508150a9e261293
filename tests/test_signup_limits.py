"""The signup's limits in one Redis call (limits.check_signup): the same counts as one at a time."""

from __future__ import annotations

from newsletter.models import SuppressionReason
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import suppression
from newsletter.subscribers.limits import check_signup


def test_a_refused_ip_does_not_count_the_mailbox(redis_conn):
    for _ in range(2):
        assert check_signup(redis_conn, "192.0.2.5", (2, 60), "box", 3).ip_allowed
    refused = check_signup(redis_conn, "192.0.2.5", (2, 60), "box", 3)
    assert not refused.ip_allowed and refused.mail is None
    assert int(redis_conn.get("nl:limit:confirm-mail:box")) == 2
    assert 0 < redis_conn.ttl("nl:limit:confirm-mail:box") <= 24 * 3600
    assert 0 < redis_conn.ttl("nl:limit:signup-ip:192.0.2.5") <= 60


def test_the_mailbox_cap_answers_per_count(redis_conn):
    verdicts = [check_signup(redis_conn, f"192.0.2.{i}", (20, 60), "box", 3).mail for i in range(5)]
    assert verdicts == [True, True, True, False, False]
    assert check_signup(redis_conn, "192.0.2.9", (20, 60), None, 3).mail is None  # no address: not counted


def test_redis_down_fails_open():
    import redis

    down = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    verdict = check_signup(down, "192.0.2.5", (1, 60), "box", 3)
    assert verdict.ip_allowed and verdict.mail is None  # the outbox is counted in SQL instead


def test_signups_of_a_suppressed_address_leave_its_daily_cap_alone(signup, runtime, work, smtp_sink):
    """A complaint blocks the signup; once an operator lifts it, the person still gets their mails."""
    email_hash = address_hash("ann@example.com")
    with runtime.sessions() as session:
        suppression.suppress(session, email_hash, SuppressionReason.COMPLAINED, "test")
        session.commit()
    for i in range(4):
        assert signup("ann@example.com", ip=f"198.51.100.{i + 1}").status_code == 200
    work()
    assert smtp_sink.take() == []
    with runtime.sessions() as session:
        assert suppression.remove(session, email_hash)
        session.commit()
    for i in range(4):
        assert signup("ann@example.com", ip=f"198.51.100.{i + 11}").status_code == 200
    work()
    assert len(smtp_sink.take()) == runtime.settings.confirmations_per_address == 3
