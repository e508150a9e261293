"""Automatic protection: a campaign pauses itself when its complaint or hard-bounce rate passes the limit.

A real campaign sent to ten people (a first wave; a second one waits, so the campaign is still
sending), signals recorded through feedback.record, small limits so that the thresholds are hit
exactly: at the limit nothing happens, one signal past it pauses, below the sample never.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.campaigns import scheduling
from newsletter.campaigns.jobs import tick
from newsletter.core import clock
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.models import Campaign, CampaignEvent, CampaignStatus, Delivery, DeliveryState, SignalKind
from tests.sending_helpers import add_customer, now_floor, run_engine, write_campaign
from tests.test_campaign_control_cli import lines, run

VIPS = [f"vip{i}@example.com" for i in range(10)]
OTHERS = [f"other{i}@example.com" for i in range(4)]
LIMITS = {
    "MARKETING_CAPS": "",
    "QUIET_HOURS": "",
    "RATE_MIN_SAMPLE": "4",
    "MAX_COMPLAINT_RATE": "20%",
    "MAX_BOUNCE_RATE": "30%",
}


@pytest.fixture
def sending(make_app, make_subscriber, smtp_sink, work, tmp_path):
    """Ten vips delivered in the first wave, four others waiting for the second; returns a helper."""

    def start(**settings):
        app = make_app(**{**LIMITS, **settings})
        runtime = app.extensions["newsletter"]
        for address in VIPS + OTHERS:
            make_subscriber(address, topics=("early-access",))
        with runtime.sessions() as session:
            for address in VIPS:
                add_customer(session, address, tier="vip")
        start = now_floor() - timedelta(minutes=1)  # as in test_feedback_record: due at once
        folder = write_campaign(
            tmp_path,
            waves=[("vip", 'tier == "vip"', start), ("everyone", "all", start + timedelta(days=1))],
        )
        with runtime.sessions() as session:
            scheduling.schedule(session, runtime.settings, folder)
            session.commit()
        run_engine(runtime, work)
        assert len(smtp_sink.take()) == 10
        return runtime

    return start


def deliveries(runtime) -> list[int]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(Delivery.id).where(Delivery.state == DeliveryState.SENT).order_by(Delivery.id)
            )
        )


def signal(runtime, kind: SignalKind, delivery_id: int, source: str = "smtp"):
    with runtime.sessions() as session:
        done = record(session, runtime.settings, Signal(kind, source, delivery_id=delivery_id))
        session.commit()
        return done


def campaign(runtime) -> Campaign:
    with runtime.sessions() as session:
        row = session.scalar(select(Campaign))
        session.expunge(row)
        return row


def test_complaints_pause_the_campaign_one_past_the_limit(sending, make_app):
    runtime = sending()
    ids = deliveries(runtime)
    assert campaign(runtime).status == CampaignStatus.SENDING
    for delivery_id in ids[:2]:  # 2 in 10: exactly the 20% limit, not past it
        assert signal(runtime, SignalKind.COMPLAINT, delivery_id).paused is None
    # the same message reported again by another way in counts once
    assert signal(runtime, SignalKind.COMPLAINT, ids[1], source="webhook:ses").paused is None
    assert campaign(runtime).status == CampaignStatus.SENDING

    done = signal(runtime, SignalKind.COMPLAINT, ids[2])
    reason = "complaint rate 30.00% passed the 20.00% limit (3 complaints in 10 delivered)"
    assert done.paused == reason
    paused = campaign(runtime)
    assert (paused.status, paused.pause_reason) == (CampaignStatus.PAUSED, reason)
    with runtime.sessions() as session:
        event = session.scalars(select(CampaignEvent).order_by(CampaignEvent.id.desc())).first()
    assert (event.from_status, event.to_status) == (CampaignStatus.SENDING, CampaignStatus.PAUSED)
    assert (event.actor, event.reason) == ("protection", reason)
    status = run(make_app.apps[-1], "status", "test-sale")
    assert status.exit_code == 0 and lines(status)[0] == f"test-sale: paused ({reason})"

    # Already paused: a further complaint leaves it alone (no second event, no error).
    assert signal(runtime, SignalKind.COMPLAINT, ids[3]).paused is None
    with runtime.sessions() as session:
        assert (
            len(session.scalars(select(CampaignEvent).where(CampaignEvent.actor == "protection")).all()) == 1
        )


def test_hard_bounces_pause_the_campaign_one_past_the_limit(sending):
    runtime = sending()
    ids = deliveries(runtime)
    for delivery_id in ids[:3]:  # 3 in 10: exactly the 30% limit
        assert signal(runtime, SignalKind.BOUNCE_HARD, delivery_id).paused is None
    for delivery_id in ids[3:6]:  # soft bounces do not count towards the rate
        assert signal(runtime, SignalKind.BOUNCE_SOFT, delivery_id).paused is None
    assert campaign(runtime).status == CampaignStatus.SENDING
    done = signal(runtime, SignalKind.BOUNCE_HARD, ids[3])
    assert done.paused == "hard-bounce rate 40.00% passed the 30.00% limit (4 hard bounces in 10 delivered)"
    assert campaign(runtime).pause_reason == done.paused


def test_below_the_sample_a_campaign_never_pauses(sending):
    runtime = sending(RATE_MIN_SAMPLE="11")  # ten delivered: one short of the sample
    for delivery_id in deliveries(runtime)[:6]:
        assert signal(runtime, SignalKind.COMPLAINT, delivery_id).paused is None
        assert signal(runtime, SignalKind.BOUNCE_HARD, delivery_id).paused is None
    assert campaign(runtime).status == CampaignStatus.SENDING


def test_a_paused_campaign_sends_none_of_its_queued_rows(sending, smtp_sink, work):
    runtime = sending()
    ids = deliveries(runtime)
    clock.travel(timedelta(days=1, minutes=1))
    tick()  # the second wave starts: its four rows are queued and their batch is enqueued
    with runtime.sessions() as session:
        queued = session.scalars(select(Delivery.id).where(Delivery.state == DeliveryState.QUEUED)).all()
    assert len(queued) == len(OTHERS)
    for delivery_id in ids[:3]:
        signal(runtime, SignalKind.COMPLAINT, delivery_id)
    assert campaign(runtime).status == CampaignStatus.PAUSED
    run_engine(runtime, work)
    assert smtp_sink.take() == []
    with runtime.sessions() as session:
        states = session.scalars(select(Delivery.state).where(Delivery.id.in_(queued))).all()
    assert set(states) == {DeliveryState.QUEUED}


def test_a_resumed_campaign_still_over_the_limit_pauses_again_at_the_next_signal(sending):
    runtime = sending()
    ids = deliveries(runtime)
    for delivery_id in ids[:3]:
        signal(runtime, SignalKind.COMPLAINT, delivery_id)
    with runtime.sessions() as session:
        row = session.scalar(select(Campaign))
        assert scheduling.resume(session, row).ok
        session.commit()
    assert campaign(runtime).status == CampaignStatus.SENDING  # the operator's call stands
    done = signal(runtime, SignalKind.BOUNCE_HARD, ids[5])  # the next signal: still 30% complaints
    assert done.paused and done.paused.startswith("complaint rate 30.00%")
    assert campaign(runtime).status == CampaignStatus.PAUSED


def test_a_finished_campaign_is_left_alone(make_app, make_subscriber, smtp_sink, work, tmp_path):
    app = make_app(**LIMITS)
    runtime = app.extensions["newsletter"]
    for address in VIPS:
        make_subscriber(address, topics=("early-access",))
    folder = write_campaign(tmp_path, waves=[("all", "all", now_floor() - timedelta(minutes=1))])
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()
    run_engine(runtime, work)
    assert len(smtp_sink.take()) == 10 and campaign(runtime).status == CampaignStatus.DONE
    for delivery_id in deliveries(runtime)[:5]:
        assert signal(runtime, SignalKind.COMPLAINT, delivery_id).paused is None
    assert campaign(runtime).status == CampaignStatus.DONE
