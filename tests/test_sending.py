"""The sending engine end to end: schedule from files, waves, caps, quiet hours, faults, controls.

Real Redis, a real SMTP server on loopback, SQLite and PostgreSQL, the engine's clock moved
forward instead of sleeping.
"""

from __future__ import annotations

import re
import smtplib
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, insert, select, text, update

from newsletter.campaigns import batches, recovery, scheduling, waves
from newsletter.campaigns.ledger import BatchReport, Ledger, batch_ranges
from newsletter.campaigns.planning import PlannedWave, plan
from newsletter.core import clock
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Customer,
    Delivery,
    DeliveryState,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    Wave,
)
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import suppression
from newsletter.subscribers.signup import topics_by_slug
from tests.conftest import _free_port
from tests.sending_helpers import (
    FaultyHandler,
    add_customer,
    now_floor,
    recipients,
    rows,
    run_engine,
    start_faulty_smtp,
    write_campaign,
)

NO_CAPS = {"MARKETING_CAPS": "", "QUIET_HOURS": ""}


def schedule(runtime, *folders):
    """Schedule the folders; a wave due within two minutes is then reached by moving the clock."""
    with runtime.sessions() as session:
        campaigns = [scheduling.schedule(session, runtime.settings, folder) for folder in folders]
        session.commit()
        first = min(w.send_at for c in campaigns for w in c.waves)
        if timedelta(0) < first - clock.now() <= timedelta(minutes=2):
            clock.travel(first - clock.now())
        return campaigns[-1].id


def test_two_wave_early_access_sale_sends_vips_first_then_everyone_once(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    start = now_floor()
    vip = make_subscriber("vip@example.com", topics=("early-access",), first_name="Vera")
    big = make_subscriber("big@example.com", topics=("early-access",), first_name="Bob")
    regular = make_subscriber("reg@example.com", topics=("early-access",), first_name="Rita")
    make_subscriber("news-only@example.com", topics=("newsletter",))
    gone = make_subscriber("gone@example.com", topics=("early-access",))
    with runtime.sessions() as session:
        add_customer(session, "vip@example.com", tier="vip", orders_count=9, lifetime_value=Decimal("900"))
        add_customer(session, "big@example.com", tier="bronze", orders_count=3, lifetime_value=Decimal("650"))
        add_customer(session, "reg@example.com", tier="bronze", orders_count=1, lifetime_value=Decimal("40"))
        suppression.suppress(session, gone.email_hash, SuppressionReason.MANUAL, "test", "")
        session.commit()
    folder = write_campaign(
        tmp_path,
        waves=[
            ("vip", 'tier in ["gold", "vip"] or lifetime_value >= 500', start + timedelta(hours=1)),
            ("everyone", "all", start + timedelta(hours=2)),
        ],
        public_at=start + timedelta(days=1),
    )
    schedule(runtime, folder)

    run_engine(runtime, work)
    assert smtp_sink.take() == [] and rows(runtime) == []  # nothing before the first send_at

    clock.travel(timedelta(hours=1, minutes=1))
    run_engine(runtime, work)
    first = smtp_sink.take()
    assert sorted(recipients(first)) == ["big@example.com", "vip@example.com"]

    clock.travel(timedelta(hours=1))
    run_engine(runtime, work)
    second = smtp_sink.take()
    assert sorted(recipients(second)) == ["reg@example.com"]

    ledger = {r.subscriber_id: r for r in rows(runtime)}
    assert ledger[vip.id].state == ledger[big.id].state == ledger[regular.id].state == DeliveryState.SENT
    assert ledger[gone.id].state == DeliveryState.SKIPPED and ledger[gone.id].reason == "suppressed"
    assert len(ledger) == 4  # the newsletter-only subscriber was never selected
    with runtime.sessions() as session:
        assert session.scalar(select(Campaign.status)) == CampaignStatus.DONE

    for message in first + second:
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert re.match(r"<https://newsletter\.test/unsubscribe/[^>]+>", message["List-Unsubscribe"])
        assert message["List-Id"] and message["Feedback-ID"]
        assert message["Message-ID"] == f"<{message['Message-ID'][1:-1]}>"
        html = message.get_body(("html",)).get_content()
        assert "/early-access/" in html and "/preferences/" in html
    assert len({m["Message-ID"] for m in first + second}) == 3
    stored = {r.message_id for r in ledger.values() if r.message_id}
    assert stored == {m["Message-ID"] for m in first + second}
    vera = next(m for m in first if m["To"] == "vip@example.com")
    assert "Vera" in vera.get_body(("plain",)).get_content()


def test_waves_add_only_those_no_earlier_wave_holds_reading_the_ledger_once_per_person(make_app, tmp_path):
    """A later wave's INSERT ... SELECT leaves out the earlier wave's people (the ledger's unique key)
    and reads the ledger about once per person, not once per row it has just inserted: the anti-join
    it replaced went quadratic on PostgreSQL for a freshly loaded list (no statistics yet): 12 s for
    20,000 people in the send benchmark, 1,999,000 index entries read here for 2,000."""
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    start = now_floor()
    people, loyal = 2000, 300
    with runtime.sessions() as session:
        topic_id = topics_by_slug(session)["early-access"].id
        emails = [f"p{i}@example.com" for i in range(people)]
        session.execute(
            insert(Subscriber),
            [
                {
                    "email": e,
                    "email_hash": address_hash(e),
                    "status": SubscriberStatus.ACTIVE,
                    "confirmed_at": start,
                }
                for e in emails
            ],
        )
        ids = dict(session.execute(select(Subscriber.email, Subscriber.id)).all())
        session.execute(
            insert(Subscription),
            [
                {"subscriber_id": ids[e], "topic_id": topic_id, "status": SubscriptionStatus.ACTIVE}
                for e in emails
            ],
        )
        session.execute(
            insert(Customer),
            [{"email_hash": address_hash(e), "lifetime_value": Decimal("900")} for e in emails[:loyal]],
        )
        session.commit()
    sale = {"public_at": start + timedelta(days=1)}
    earlier = write_campaign(
        tmp_path, slug="earlier", waves=[("all", "all", start + timedelta(minutes=30))], **sale
    )
    folder = write_campaign(
        tmp_path,
        waves=[
            ("loyal", "lifetime_value >= 500", start + timedelta(hours=1)),
            ("everyone", "all", start + timedelta(hours=2)),
        ],
        **sale,
    )
    campaign_id = schedule(runtime, earlier, folder)

    started = {}
    for due in (timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2)):
        clock.travel(start + due + timedelta(minutes=1) - clock.now())
        with runtime.sessions() as session:
            (wave,) = waves.due_waves(session, clock.now())
            started[wave.name] = waves.start_wave(session, wave, clock.now())
            if session.get_bind().dialect.name == "postgresql":  # what this transaction read of the ledger
                read = session.execute(
                    text(
                        # entries its indexes returned, plus rows sequential scans read
                        "SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) "
                        "+ pg_stat_get_xact_tuples_returned('deliveries'::regclass) "
                        "FROM pg_index WHERE indrelid = 'deliveries'::regclass"
                    )
                ).scalar_one()
                assert read < 5 * people, f"wave {wave.name!r} read {read} ledger entries"
            session.commit()

    assert started == {"all": people, "loyal": loyal, "everyone": people - loyal}
    with runtime.sessions() as session:
        by_wave = dict(
            session.execute(
                select(Wave.name, func.count(Delivery.id))
                .join(Delivery, Delivery.wave_id == Wave.id)
                .where(Delivery.campaign_id == campaign_id)
                .group_by(Wave.name)
            ).all()
        )
        assert by_wave == {"loyal": loyal, "everyone": people - loyal}
        assert session.scalar(select(func.count()).select_from(Delivery)) == 2 * people


def test_caps_defer_until_allowed_and_skip_past_the_deadline(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(MARKETING_CAPS="1/20h", QUIET_HOURS="")
    runtime = app.extensions["newsletter"]
    start = now_floor()
    make_subscriber("a@example.com", topics=("early-access", "newsletter"))
    make_subscriber("b@example.com", topics=("early-access", "newsletter"))
    first = write_campaign(
        tmp_path, slug="first", waves=[("all", "all", start)], deliver_by=start + timedelta(days=5)
    )
    schedule(runtime, first)
    run_engine(runtime, work)
    assert len(smtp_sink.take()) == 2

    # 10 hours later a sale for a@ (deadline in 2 days) and one for b@ (deadline in 5 hours)
    clock.travel(timedelta(hours=10))
    later = now_floor()
    with runtime.sessions() as session:
        b = session.scalar(select(Subscriber).where(Subscriber.email == "b@example.com"))
        session.execute(update(Subscriber).where(Subscriber.id == b.id).values(time_zone="Europe/Paris"))
        session.commit()
    long_sale = write_campaign(
        tmp_path,
        slug="long",
        topic="newsletter",
        waves=[("all", "all", later)],
        public_at=later + timedelta(days=2),
    )
    short_sale = write_campaign(
        tmp_path, slug="short", waves=[("all", "all", later)], public_at=later + timedelta(hours=5)
    )
    schedule(runtime, long_sale, short_sale)
    run_engine(runtime, work)
    assert smtp_sink.take() == []
    long_rows = rows(runtime, "long")
    assert {r.state for r in long_rows} == {DeliveryState.DEFERRED}
    assert all(r.reason == "frequency cap" for r in long_rows)
    # allowed again 20 h after the first send, i.e. about 10 h from now
    assert all(timedelta(hours=9) < r.send_after - later <= timedelta(hours=10, minutes=1) for r in long_rows)
    short_rows = rows(runtime, "short")
    # each person got at most one of the two sales now: none, since the cap is used up
    assert {r.state for r in short_rows} == {DeliveryState.SKIPPED}
    assert all(r.reason.startswith("frequency cap: next allowed") for r in short_rows)

    clock.travel(timedelta(hours=10, minutes=2))
    run_engine(runtime, work)
    assert sorted(recipients(smtp_sink.take())) == ["a@example.com", "b@example.com"]
    assert {r.state for r in rows(runtime, "long")} == {DeliveryState.SENT}


def test_quiet_hours_defer_to_the_subscribers_morning(make_app, make_subscriber, smtp_sink, work, tmp_path):
    app = make_app(MARKETING_CAPS="", QUIET_HOURS="21:00-08:00")
    runtime = app.extensions["newsletter"]
    night, day = night_zone(), day_zone()
    make_subscriber("night@example.com", topics=("newsletter",))
    make_subscriber("day@example.com", topics=("newsletter",))
    with runtime.sessions() as session:
        session.execute(
            update(Subscriber).where(Subscriber.email == "night@example.com").values(time_zone=night)
        )
        session.execute(update(Subscriber).where(Subscriber.email == "day@example.com").values(time_zone=day))
        session.commit()
    folder = write_campaign(tmp_path, topic="newsletter", waves=[("all", "all", now_floor())])
    schedule(runtime, folder)
    run_engine(runtime, work)
    assert recipients(smtp_sink.take()) == {"day@example.com": 1}
    deferred = [r for r in rows(runtime) if r.state == DeliveryState.DEFERRED]
    assert len(deferred) == 1 and deferred[0].reason == "quiet hours"
    morning = deferred[0].send_after.replace(tzinfo=_utc()).astimezone(_zone(night))
    assert (morning.hour, morning.minute) == (8, 0)

    clock.travel(deferred[0].send_after - clock.now() + timedelta(minutes=1))
    run_engine(runtime, work)
    assert recipients(smtp_sink.take()) == {"night@example.com": 1}


def test_one_batch_defers_each_person_to_their_own_time_with_their_own_reason(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    """A batch's deferrals are written together (one statement on PostgreSQL): each row keeps its
    own send_after and reason, and whoever may be sent now is sent."""
    app = make_app(MARKETING_CAPS="1/20h", QUIET_HOURS="21:00-08:00", SEND_CONNECTIONS="1")  # one slice
    runtime = app.extensions["newsletter"]
    zones = {"capped": day_zone(), "night": night_zone(), "paused": day_zone(), "now": day_zone()}
    people = {
        name: make_subscriber(
            f"{name}@example.com", topics=("newsletter", "early-access")[: 2 if name == "capped" else 1]
        )
        for name in zones
    }
    with runtime.sessions() as session:
        for name, zone in zones.items():
            session.execute(update(Subscriber).where(Subscriber.id == people[name].id).values(time_zone=zone))
        session.commit()
    schedule(
        runtime,
        write_campaign(tmp_path, slug="earlier", topic="early-access", waves=[("all", "all", now_floor())]),
    )
    run_engine(runtime, work)
    assert recipients(smtp_sink.take()) == {"capped@example.com": 1}
    (earlier,) = rows(runtime, "earlier")

    clock.travel(timedelta(hours=1))
    pause_ends = clock.now() + timedelta(minutes=30)
    with runtime.sessions() as session:
        session.execute(
            update(Subscriber).where(Subscriber.id == people["paused"].id).values(paused_until=pause_ends)
        )
        session.commit()
    schedule(
        runtime,
        write_campaign(tmp_path, slug="sale", topic="newsletter", waves=[("all", "all", now_floor())]),
    )
    run_engine(runtime, work)
    assert recipients(smtp_sink.take()) == {"now@example.com": 1}
    sale = {r.subscriber_id: r for r in rows(runtime, "sale")}
    capped, night, paused = (sale[people[name].id] for name in ("capped", "night", "paused"))
    assert {capped.state, night.state, paused.state} == {DeliveryState.DEFERRED}
    assert (capped.reason, night.reason, paused.reason) == ("frequency cap", "quiet hours", "paused")
    assert timedelta(hours=19, minutes=59) <= capped.send_after - earlier.sent_at < timedelta(hours=32)
    morning = night.send_after.replace(tzinfo=_utc()).astimezone(_zone(zones["night"]))
    assert (morning.hour, morning.minute) == (8, 0)
    assert paused.send_after == pause_ends
    assert sale[people["now"].id].state == DeliveryState.SENT


def _utc():
    from datetime import UTC

    return UTC


def _zone(name):
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _local_hour(zone: str) -> int:
    return clock.now().replace(tzinfo=_utc()).astimezone(_zone(zone)).hour


#: zones a few hours apart: at any moment one is deep in the night and one in the afternoon
ZONES = [
    "Pacific/Kiritimati",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Europe/Paris",
    "America/Sao_Paulo",
    "America/New_York",
    "America/Los_Angeles",
    "Pacific/Honolulu",
]


def night_zone() -> str:
    return next(z for z in ZONES if _local_hour(z) in {22, 23, 0, 1, 2, 3, 4, 5, 6})


def day_zone() -> str:
    return next(z for z in ZONES if 10 <= _local_hour(z) <= 18)


def test_batch_ranges_cut_the_ready_rows_every_size_rows_in_id_order(make_app, make_subscriber, tmp_path):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(6):
        make_subscriber(f"p{i}@example.com", topics=("newsletter",))
    campaign_id = schedule(
        runtime, write_campaign(tmp_path, topic="newsletter", waves=[("all", "all", now_floor())])
    )
    with runtime.sessions() as session:
        for wave in waves.due_waves(session, clock.now()):
            waves.start_wave(session, wave, clock.now())
        ids = list(session.scalars(select(Delivery.id).order_by(Delivery.id)))
        session.execute(update(Delivery).where(Delivery.id == ids[2]).values(state=DeliveryState.SENT))
        session.commit()
        assert batch_ranges(session, campaign_id, clock.now(), 2) == [
            (ids[0], ids[1]),
            (ids[3], ids[4]),
            (ids[5], ids[5]),
        ]
        assert batch_ranges(session, campaign_id, clock.now(), 1000) == [(ids[0], ids[5])]


def test_an_unsubscribe_during_the_send_is_honoured_by_the_next_message(
    make_app, make_subscriber, smtp_sink, tmp_path, monkeypatch
):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    people = [make_subscriber(f"p{i}@example.com", topics=("newsletter",)) for i in range(5)]
    campaign_id = schedule(
        runtime, write_campaign(tmp_path, topic="newsletter", waves=[("all", "all", now_floor())])
    )
    with runtime.sessions() as session:
        for wave in waves.due_waves(session, clock.now()):
            waves.start_wave(session, wave, clock.now())
        session.commit()
        ((first_id, last_id),) = batch_ranges(session, campaign_id, clock.now(), 100)

    client = app.test_client()
    original = Ledger.mark_sent

    def mark_sent_then_p3_unsubscribes(ledger, recipient, message_id):
        original(ledger, recipient, message_id)
        if recipient.subscriber_id == people[0].id:  # the first message is out: p3 clicks one-click
            from newsletter.subscribers import links

            url = links.unsubscribe_url(runtime.settings, people[3])
            answer = client.post(
                url.removeprefix(runtime.settings.base_url), data={"List-Unsubscribe": "One-Click"}
            )
            assert answer.status_code == 200

    monkeypatch.setattr(Ledger, "mark_sent", mark_sent_then_p3_unsubscribes)
    from newsletter.mail.transports import make_transport

    transport = make_transport(runtime.settings)
    with runtime.sessions() as session:
        report = batches.send_batch(
            session,
            runtime.redis,
            runtime.settings,
            transport,
            campaign_id,
            first_id,
            last_id,
            commit=session.commit,
        )
    transport.close()
    got = recipients(smtp_sink.take())
    assert "p3@example.com" not in got and len(got) == 4
    assert report.sent == 4 and report.skipped == 1
    by_person = {r.subscriber_id: r for r in rows(runtime)}
    assert by_person[people[3].id].state == DeliveryState.SKIPPED
    assert by_person[people[3].id].reason == "unsubscribed before sending"


@pytest.mark.parametrize("pipelining", [False, True])
def test_random_421_451_deliver_everything_once_and_550_fails_and_suppresses(
    make_app, make_subscriber, work, tmp_path, smtp_sink, monkeypatch, pipelining
):
    if pipelining:  # aiosmtpd reads pipelined commands in order, it just does not advertise it
        original = smtplib.SMTP.has_extn
        monkeypatch.setattr(
            smtplib.SMTP, "has_extn", lambda self, name: name == "pipelining" or original(self, name)
        )
    handler = FaultyHandler(seed=3, temporary_rate=0.4, refuse={"nobody@example.com"})
    port = _free_port()
    controller = start_faulty_smtp(port, handler)
    try:
        app = make_app(SMTP_URL=f"smtp://127.0.0.1:{port}", PAUSE_AFTER_ERRORS="1000", **NO_CAPS)
        runtime = app.extensions["newsletter"]
        emails = [f"r{i}@example.com" for i in range(30)] + ["nobody@example.com"]
        for email in emails:
            make_subscriber(email, topics=("newsletter",))
        schedule(runtime, write_campaign(tmp_path, topic="newsletter", waves=[("all", "all", now_floor())]))
        for _ in range(12):
            run_engine(runtime, work, rounds=1)
            clock.travel(timedelta(hours=1, minutes=1))  # past the longest backoff
        counts = handler.counts()
        assert handler.faults["451"] > 0 and handler.faults["421"] > 0
        assert set(counts) == set(emails) - {"nobody@example.com"}
        assert set(counts.values()) == {1}, counts  # nobody twice, whatever the faults
        ledger = {r.subscriber_id: r for r in rows(runtime)}
        with runtime.sessions() as session:
            nobody = session.scalar(select(Subscriber).where(Subscriber.email == "nobody@example.com"))
            entry = session.scalar(select(Suppression).where(Suppression.email_hash == nobody.email_hash))
        assert ledger[nobody.id].state == DeliveryState.FAILED and "550" in ledger[nobody.id].reason
        assert entry is not None and entry.reason == SuppressionReason.BOUNCED
        assert sum(r.state == DeliveryState.SENT for r in ledger.values()) == 30
    finally:
        controller.stop()


def test_consecutive_errors_pause_the_campaign_with_the_reason(
    make_app, make_subscriber, work, tmp_path, smtp_sink
):
    handler = FaultyHandler(refuse={f"x{i}@example.com" for i in range(10)})
    port = _free_port()
    controller = start_faulty_smtp(port, handler)
    try:
        app = make_app(SMTP_URL=f"smtp://127.0.0.1:{port}", PAUSE_AFTER_ERRORS="3", **NO_CAPS)
        runtime = app.extensions["newsletter"]
        for i in range(10):
            make_subscriber(f"x{i}@example.com", topics=("newsletter",))
        schedule(runtime, write_campaign(tmp_path, topic="newsletter", waves=[("all", "all", now_floor())]))
        run_engine(runtime, work)
        with runtime.sessions() as session:
            campaign = session.scalar(select(Campaign))
            assert campaign.status == CampaignStatus.PAUSED
            assert "3 consecutive send errors" in campaign.pause_reason
        states = [r.state for r in rows(runtime)]
        # each parallel slice may fail one more before it sees the pause (SQLite: one slice)
        failed = states.count(DeliveryState.FAILED)
        assert 3 <= failed <= 2 + runtime.settings.send_connections
        assert states.count(DeliveryState.QUEUED) == 10 - failed
    finally:
        controller.stop()


def test_pause_stops_at_the_next_message_and_resume_sends_the_rest_once(
    make_app, make_subscriber, smtp_sink, work, tmp_path, monkeypatch
):
    # One slice, so "the next message" is one message (parallel slices each stop at their next)
    app = make_app(SEND_CONNECTIONS="1", **NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(8):
        make_subscriber(f"q{i}@example.com", topics=("newsletter",))
    campaign_id = schedule(
        runtime, write_campaign(tmp_path, topic="newsletter", waves=[("all", "all", now_floor())])
    )
    monkeypatch.setattr(
        batches, "HEARTBEAT_SECONDS", -1
    )  # look at the campaign's status before every message
    checks = []
    original = Ledger.still_wanted

    def pause_before_the_fourth_message(ledger, recipient):
        checks.append(recipient)
        if len(checks) == 4:  # an operator pauses while the batch runs (three already sent)
            with runtime.sessions() as other:
                scheduling.pause(other, other.get(Campaign, campaign_id))
                other.commit()
        return original(ledger, recipient)

    monkeypatch.setattr(Ledger, "still_wanted", pause_before_the_fourth_message)
    run_engine(runtime, work)
    # the message being prepared when the pause came goes out; the batch stops before the next
    assert len(smtp_sink.take()) == 4
    states = [r.state for r in rows(runtime)]
    assert states.count(DeliveryState.SENT) == 4 and states.count(DeliveryState.QUEUED) == 4

    monkeypatch.setattr(Ledger, "still_wanted", original)
    with runtime.sessions() as session:
        assert scheduling.resume(session, session.get(Campaign, campaign_id)).ok
        session.commit()
    run_engine(runtime, work)
    second = recipients(smtp_sink.take())
    assert len(second) == 4 and set(second.values()) == {1}
    assert {r.state for r in rows(runtime)} == {DeliveryState.SENT}


def test_cancel_skips_what_is_left(make_app, make_subscriber, smtp_sink, work, tmp_path):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    make_subscriber("c@example.com", topics=("newsletter",))
    start = now_floor()
    folder = write_campaign(tmp_path, topic="newsletter", waves=[("all", "all", start + timedelta(hours=1))])
    campaign_id = schedule(runtime, folder)
    with runtime.sessions() as session:
        assert scheduling.cancel(session, session.get(Campaign, campaign_id)).ok
        session.commit()
    clock.travel(timedelta(hours=2))
    run_engine(runtime, work)
    assert smtp_sink.take() == [] and rows(runtime) == []


def test_redis_flushed_mid_campaign_rebuilds_work_and_caps_from_the_ledger(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(MARKETING_CAPS="1/20h", QUIET_HOURS="", BATCH_SIZE="2")
    runtime = app.extensions["newsletter"]
    for i in range(6):
        make_subscriber(f"f{i}@example.com", topics=("newsletter", "early-access"))
    start = now_floor()
    first = write_campaign(tmp_path, slug="first", topic="newsletter", waves=[("all", "all", start)])
    schedule(runtime, first)
    from newsletter.campaigns.jobs import tick

    tick()  # wave started, three batch jobs queued
    from rq import SimpleWorker

    from newsletter.core.runtime import CAMPAIGNS

    SimpleWorker([runtime.queue(CAMPAIGNS)], connection=runtime.redis).work(burst=True, max_jobs=1)
    assert len(smtp_sink.take()) == 2
    runtime.redis.flushdb()  # queue, jobs and cap counters gone

    second = write_campaign(
        tmp_path, slug="second", waves=[("all", "all", now_floor())], deliver_by=start + timedelta(days=2)
    )
    schedule(runtime, second)
    with runtime.sessions() as session:
        assert scheduling.resume(session, session.scalar(select(Campaign).where(Campaign.slug == "first"))).ok
    run_engine(runtime, work)
    assert len(recipients(smtp_sink.take())) == 4  # the first campaign's other four, once each
    first_rows = rows(runtime, "first")
    assert {r.state for r in first_rows} == {DeliveryState.SENT}
    # the rebuilt counters remember the first campaign: the second one waits 20 hours for all six
    assert {r.state for r in rows(runtime, "second")} == {DeliveryState.DEFERRED}


def test_plan_counts_audience_suppressed_capped_and_quiet(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(MARKETING_CAPS="1/20h", QUIET_HOURS="21:00-08:00")
    runtime = app.extensions["newsletter"]
    start = now_floor()
    for i in range(4):
        make_subscriber(f"v{i}@example.com", topics=("early-access",))
    for i in range(6):
        make_subscriber(f"e{i}@example.com", topics=("early-access",))
    with runtime.sessions() as session:
        for i in range(4):
            add_customer(
                session, f"v{i}@example.com", tier="vip", orders_count=5, lifetime_value=Decimal("800")
            )
        e0 = session.scalar(select(Subscriber).where(Subscriber.email == "e0@example.com"))
        suppression.suppress(session, e0.email_hash, SuppressionReason.MANUAL, "test", "")
        session.commit()
    at = start.replace(hour=12) + timedelta(days=1)  # noon UTC tomorrow: quiet in Tokyo
    with runtime.sessions() as session:
        session.execute(
            update(Subscriber).where(Subscriber.email == "e1@example.com").values(time_zone="Asia/Tokyo")
        )
        session.commit()
        plans = plan(
            session,
            runtime.settings,
            "early-access",
            [
                PlannedWave("vip", 'tier == "vip"', at),
                PlannedWave("everyone", "all", at + timedelta(hours=2)),
            ],
            deadline=at + timedelta(days=2),
        )
    vip, everyone = plans
    assert (vip.audience, vip.suppressed, vip.now) == (4, 0, 4)
    assert (everyone.audience, everyone.suppressed, everyone.now) == (6, 1, 4)
    assert everyone.deferred == {"quiet hours": 1}
    run_engine(runtime, work)
    assert smtp_sink.take() == [] and rows(runtime) == []  # planning sent nothing, wrote nothing


def test_deferred_rows_are_skipped_once_the_deadline_passes(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(MARKETING_CAPS="", QUIET_HOURS="21:00-08:00")
    runtime = app.extensions["newsletter"]
    make_subscriber("late@example.com", topics=("early-access",))
    with runtime.sessions() as session:
        zone = night_zone()
        session.execute(update(Subscriber).values(time_zone=zone))
        session.commit()
    start = now_floor()
    folder = write_campaign(tmp_path, waves=[("all", "all", start)], public_at=start + timedelta(hours=20))
    schedule(runtime, folder)
    run_engine(runtime, work)
    (row,) = rows(runtime)
    assert row.state == DeliveryState.DEFERRED and row.reason == "quiet hours"
    clock.travel(timedelta(hours=21))  # the workers were down all night; the sale is public now
    run_engine(runtime, work)
    (row,) = rows(runtime)
    assert row.state == DeliveryState.SKIPPED and row.reason == "deadline passed before it could be sent"
    assert smtp_sink.take() == []


@pytest.mark.parametrize(
    "first, last, count, expected",
    [
        (1, 500, 4, [(1, 125), (126, 250), (251, 375), (376, 500)]),
        (10, 12, 4, [(10, 10), (11, 11), (12, 12)]),
        (7, 7, 4, [(7, 7)]),
        (1, 10, 1, [(1, 10)]),
    ],
)
def test_a_batch_is_cut_into_contiguous_slices_one_per_connection(first, last, count, expected):
    from newsletter.campaigns.jobs import _slices

    assert _slices(first, last, count) == expected


# --- dead workers and one person's bad data ----------------------------------------------------

#: the store's default caps (1/20h, 3/7d, 8/30d) without quiet hours, so only the caps decide
DEFAULT_CAPS = {"QUIET_HOURS": ""}


class Killed(BaseException):
    """What SIGKILL does to a slice, in process: nothing after it runs, no handler sees it."""


class DyingTransport:
    """The real relay, and a worker that dies right after handing it the ``after``-th message."""

    def __init__(self, settings, after: int):
        from newsletter.mail.transports import make_transport

        self.inner, self.after, self.handed = make_transport(settings), after, 0

    def send_raw(self, envelope_from, to, data):
        self.inner.send_raw(envelope_from, to, data)
        self.handed += 1
        if self.handed == self.after:
            raise Killed

    def close(self):
        self.inner.close()


def started_batch(runtime, tmp_path, slug: str = "test-sale") -> tuple[int, int, int]:
    """Schedule a newsletter to everyone now and start its wave: (campaign id, first id, last id)."""
    campaign_id = schedule(
        runtime, write_campaign(tmp_path, slug=slug, topic="newsletter", waves=[("all", "all", now_floor())])
    )
    with runtime.sessions() as session:
        for wave in waves.due_waves(session, clock.now()):
            waves.start_wave(session, wave, clock.now())
        session.commit()
        ((first_id, last_id),) = batch_ranges(session, campaign_id, clock.now(), 1000)
    return campaign_id, first_id, last_id


def run_slice(runtime, transport, campaign_id, first_id, last_id, before_commit=None) -> BatchReport:
    with runtime.sessions() as session:

        def commit():
            if before_commit:
                before_commit()
            session.commit()

        return batches.send_batch(
            session, runtime.redis, runtime.settings, transport, campaign_id, first_id, last_id, commit=commit
        )


def cap_place(runtime, row) -> float | None:
    """The time of the cap place a delivery row holds in Redis, or None."""
    from newsletter.campaigns import caps

    return runtime.redis.zscore(caps.key_for(row.subscriber_id), caps.member_for(row.id))


def die_and_be_found_dead(runtime) -> None:
    """The dead slice's heartbeat runs out and its claim grows old: the next tick takes it back."""
    with runtime.sessions() as session:
        tokens = session.scalars(select(Delivery.claim_token).where(Delivery.claim_token.is_not(None)))
        for token in set(tokens):
            runtime.redis.delete(f"nl:claim:{token}")
    clock.travel(timedelta(seconds=runtime.settings.stale_claim_seconds + 1))


@pytest.mark.parametrize("dies", ["inside the third SMTP transaction", "before its decisions are committed"])
def test_a_killed_slice_gives_back_the_cap_places_of_every_row_it_hands_back(
    make_app, make_subscriber, smtp_sink, work, tmp_path, dies
):
    from newsletter.campaigns.jobs import tick

    app = make_app(**DEFAULT_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(6):
        make_subscriber(f"k{i}@example.com", topics=("newsletter",))
    campaign_id, first_id, last_id = started_batch(runtime, tmp_path)
    transport = DyingTransport(runtime.settings, after=3)
    commits = []

    def commit_until_killed():  # the first commit is the claim, the second the cap decisions
        commits.append(1)
        if dies.startswith("before") and len(commits) == 2:
            raise Killed

    with pytest.raises(Killed):
        run_slice(runtime, transport, campaign_id, first_id, last_id, commit_until_killed)
    transport.close()
    sending = dies.startswith("inside")
    before = recipients(smtp_sink.take())
    assert len(before) == (3 if sending else 0)
    with runtime.sessions() as session:  # the slice is gone; its rows stay claimed, or sending
        held = DeliveryState.SENDING if sending else DeliveryState.CLAIMED
        assert session.scalar(select(func.count()).where(Delivery.state == held)) == (4 if sending else 6)
    die_and_be_found_dead(runtime)

    done = tick()
    # one row may have reached the relay unmarked if it died sending; none if it died deciding
    assert done["recovered"] == (
        {"sent": 0, "uncertain": 1, "requeued": 3} if sending else {"sent": 0, "uncertain": 0, "requeued": 6}
    )
    requeued = done["recovered"]["requeued"]
    ledger = rows(runtime)
    for uncertain in [r for r in ledger if r.state == DeliveryState.UNCERTAIN]:
        assert cap_place(runtime, uncertain) is not None  # maybe delivered: it counts as a send
    handed_back = [r for r in ledger if r.state == DeliveryState.QUEUED]
    assert len(handed_back) == requeued
    assert [cap_place(runtime, r) for r in handed_back] == [None] * requeued

    work()
    run_engine(runtime, work)
    after = recipients(smtp_sink.take())
    assert len(after) == requeued and set(after.values()) == {1}
    assert not set(after) & set(before)  # nobody twice
    states = Counter(r.state for r in rows(runtime))
    # nobody deferred by a cap, and nobody lost to a false "uncertain"
    assert states == (
        {DeliveryState.SENT: 5, DeliveryState.UNCERTAIN: 1} if sending else {DeliveryState.SENT: 6}
    )


@pytest.mark.parametrize("note", ["kept", "lost with Redis"])
def test_a_killed_slice_whose_marks_were_not_written_yet_is_settled_by_its_progress_note(
    make_app, make_subscriber, smtp_sink, work, tmp_path, monkeypatch, note
):
    """The relay accepted two messages, the third was inside its SMTP transaction, and the
    process died before the group's mark: nothing in its memory reached the database.
    The sweep reads the slice's progress note: the rows below the noted one are sent (with the
    Message-ID that arrived), the noted one uncertain, the rest go back. Without the note (Redis
    restarted) the lowest SEND_MARK_EVERY + 1 rows are uncertain, the rest go back."""
    from newsletter.campaigns import caps
    from newsletter.campaigns.jobs import tick
    from newsletter.campaigns.ledger import progress_key

    mark_every = 20 if note == "kept" else 2
    app = make_app(SEND_MARK_EVERY=str(mark_every), **DEFAULT_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(6):
        make_subscriber(f"n{i}@example.com", topics=("newsletter",))
    campaign_id, first_id, last_id = started_batch(runtime, tmp_path)
    # a dead process writes nothing more: its connection goes, unmarked rows with it
    monkeypatch.setattr(Ledger, "close", lambda ledger: ledger.connection.close())
    transport = DyingTransport(runtime.settings, after=3)
    with pytest.raises(Killed):
        run_slice(runtime, transport, campaign_id, first_id, last_id)
    transport.close()
    monkeypatch.undo()
    before = {str(m["To"]): m["Message-ID"] for m in smtp_sink.take()}
    assert len(before) == 3
    if note != "kept":
        for key in runtime.redis.scan_iter(progress_key("*")):
            runtime.redis.delete(key)
    die_and_be_found_dead(runtime)

    done = tick()["recovered"]
    ledger = sorted(rows(runtime), key=lambda r: r.id)
    with runtime.sessions() as session:
        email = {id_: address for id_, address in session.execute(select(Subscriber.id, Subscriber.email))}
    if note == "kept":  # 1 and 2 accepted, 3 in the transaction, 4 to 6 never started
        assert done == {"sent": 2, "uncertain": 1, "requeued": 3}
        assert [r.state for r in ledger[:3]] == [DeliveryState.SENT] * 2 + [DeliveryState.UNCERTAIN]
        assert {email[r.subscriber_id]: r.message_id for r in ledger[:2]} == {
            email[r.subscriber_id]: before[email[r.subscriber_id]] for r in ledger[:2]
        }
    else:  # 1 and 2 were marked as a group; 3 to 5 may have left, 6 goes back
        assert done == {"sent": 0, "uncertain": 3, "requeued": 1}
        assert [r.state for r in ledger[:5]] == [DeliveryState.SENT] * 2 + [DeliveryState.UNCERTAIN] * 3
    for row in ledger:
        counted = runtime.redis.zscore(caps.key_for(row.subscriber_id), caps.member_for(row.id))
        assert (counted is not None) == (row.state != DeliveryState.QUEUED)  # a send counts, only a send
    assert not list(runtime.redis.scan_iter(progress_key("*")))  # the note goes with its slice

    work()
    run_engine(runtime, work)
    after = recipients(smtp_sink.take())
    assert set(after.values()) == {1} and not set(after) & set(before)  # nobody twice
    assert len(after) == done["requeued"]
    assert {r.state for r in rows(runtime)} <= {DeliveryState.SENT, DeliveryState.UNCERTAIN}


def test_a_slice_killed_while_deciding_leaves_a_capped_person_capped_not_uncertain(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    """The chaos test's rare failure, placed by state: a person mailed today by one campaign is
    the first row of another campaign's batch, whose worker dies before committing its cap
    decisions. Their row must go back to the queue and wait for the cap; an "uncertain" row
    would count a second message today for someone the cap kept it from."""
    from newsletter.campaigns.jobs import tick
    from newsletter.mail.transports import make_transport

    app = make_app(**DEFAULT_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(3):
        make_subscriber(f"o{i}@example.com", topics=("newsletter",))
    first = started_batch(runtime, tmp_path, slug="first-news")
    transport = make_transport(runtime.settings)
    assert run_slice(runtime, transport, *first).sent == 3
    smtp_sink.take()
    second = started_batch(runtime, tmp_path, slug="second-news")
    commits = []

    def commit_until_killed():  # the first commit is the claim, the second the cap decisions
        commits.append(1)
        if len(commits) == 2:
            raise Killed

    with pytest.raises(Killed):
        run_slice(runtime, transport, *second, commit_until_killed)
    transport.close()
    die_and_be_found_dead(runtime)
    assert tick()["recovered"] == {"sent": 0, "uncertain": 0, "requeued": 3}

    work()
    run_engine(runtime, work)
    assert recipients(smtp_sink.take()) == {}
    with runtime.sessions() as session:
        states = session.execute(
            select(Delivery.state, Delivery.reason).where(Delivery.campaign_id == second[0])
        ).all()
    assert states == [(DeliveryState.DEFERRED, "frequency cap")] * 3


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite: the sweep would wait
def test_a_slice_taken_for_dead_while_deciding_sends_nothing_and_writes_nothing(
    make_app, make_subscriber, smtp_sink, tmp_path, monkeypatch
):
    """A slice stalls past the stale limit after deciding its caps, before marking its rows
    ``sending``; the sweep hands its rows back meanwhile. The slice must notice before sending:
    its decisions would overwrite rows that are no longer its own."""
    from newsletter.mail.transports import make_transport

    app = make_app(**DEFAULT_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(4):
        make_subscriber(f"d{i}@example.com", topics=("newsletter",))
    campaign_id, first_id, last_id = started_batch(runtime, tmp_path)
    sweeps = []

    def swept_first(session, token, to_send, start_sending=batches.start_sending):
        if not sweeps:  # the stall: the tick runs in its own transaction meanwhile
            die_and_be_found_dead(runtime)
            with runtime.sessions() as other:
                sweeps.append(
                    recovery.recover_stale_claims(
                        other, runtime.redis, clock.now(), runtime.settings.stale_claim_seconds
                    )
                )
                other.commit()
        return start_sending(session, token, to_send)

    monkeypatch.setattr(batches, "start_sending", swept_first)
    transport = make_transport(runtime.settings)
    report = run_slice(runtime, transport, campaign_id, first_id, last_id)
    assert sweeps == [{"sent": 0, "uncertain": 0, "requeued": 4}]
    assert report.stopped == "claim lost" and report.sent == 0
    assert recipients(smtp_sink.take()) == {}
    assert {r.state for r in rows(runtime)} == {DeliveryState.QUEUED}
    assert run_slice(runtime, transport, campaign_id, first_id, last_id).sent == 4
    transport.close()
    assert set(recipients(smtp_sink.take()).values()) == {1}


def test_a_stalled_slice_that_lost_its_claim_leaves_the_new_owners_cap_places_alone(
    make_app, make_subscriber, smtp_sink, tmp_path
):
    app = make_app(**DEFAULT_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(5):
        make_subscriber(f"s{i}@example.com", topics=("newsletter",))
    campaign_id, first_id, last_id = started_batch(runtime, tmp_path)
    from newsletter.mail.transports import make_transport

    class StallingTransport(DyingTransport):
        """Inside the first SMTP transaction the slice stalls; the sweep hands its rows to another."""

        def send_raw(self, envelope_from, to, data):
            self.inner.send_raw(envelope_from, to, data)
            self.handed += 1
            if self.handed == 1:
                die_and_be_found_dead(runtime)
                with runtime.sessions() as session:
                    recovery.recover_stale_claims(
                        session, runtime.redis, clock.now(), runtime.settings.stale_claim_seconds
                    )
                    session.commit()
                other = make_transport(runtime.settings)
                assert run_slice(runtime, other, campaign_id, first_id, last_id).sent == 4
                other.close()

    stalled = StallingTransport(runtime.settings, after=0)
    report = run_slice(runtime, stalled, campaign_id, first_id, last_id)
    stalled.close()
    assert report.stopped == "claim lost"
    assert set(recipients(smtp_sink.take()).values()) == {1}
    ledger = rows(runtime)
    assert {r.state for r in ledger} == {DeliveryState.SENT}
    assert all(cap_place(runtime, r) is not None for r in ledger)  # every send still counts


@pytest.mark.parametrize("separator", ["\u2028", "\u0085", "\u2029"])
def test_one_subscribers_unsendable_first_name_fails_that_row_alone(
    make_app, make_subscriber, smtp_sink, work, tmp_path, separator
):
    """The campaign's subject has the first name; one has a line separator in it (straight in the DB)."""
    app = make_app(**DEFAULT_CAPS, SEND_CONNECTIONS="1")
    runtime = app.extensions["newsletter"]
    for i in range(3):
        make_subscriber(f"a{i}@example.com", topics=("newsletter",))
    bad = make_subscriber("bad@example.com", topics=("newsletter",), first_name=f"Eve{separator}Bcc: x")
    looks_encoded = make_subscriber(
        "ew@example.com", topics=("newsletter",), first_name="=?utf-8?b?SGFja2Vk?="
    )
    for i in range(3):
        make_subscriber(f"b{i}@example.com", topics=("newsletter",))
    schedule(runtime, write_campaign(tmp_path, topic="newsletter", waves=[("all", "all", now_floor())]))

    run_engine(runtime, work)
    messages = smtp_sink.take()
    got = recipients(messages)
    assert sorted(got) == sorted([f"{p}{i}@example.com" for p in "ab" for i in range(3)] + ["ew@example.com"])
    assert set(got.values()) == {1}
    [literal] = [m for m in messages if m["To"] == "ew@example.com"]
    assert str(literal["Subject"]) == "Early access, =?utf-8?b?SGFja2Vk?="  # the text, not "Hacked"
    ledger = {r.subscriber_id: r for r in rows(runtime)}
    failed = ledger[bad.id]
    assert failed.state == DeliveryState.FAILED
    assert failed.reason == "could not build the message: Subject header contains a line break"
    assert cap_place(runtime, failed) is None
    assert ledger[looks_encoded.id].state == DeliveryState.SENT
    assert [r.state for r in ledger.values()].count(DeliveryState.SENT) == 7
    with runtime.sessions() as session:
        campaign = session.scalar(select(Campaign))
        assert campaign.status == CampaignStatus.DONE and campaign.error_streak == 0
