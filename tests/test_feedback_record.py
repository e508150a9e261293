"""feedback.record: every signal lands on the row that caused it and acts on the suppression list at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.campaigns import scheduling
from newsletter.core import clock
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.mail import verp
from newsletter.models import (
    ConsentAction,
    ConsentEvent,
    Delivery,
    DeliveryEvent,
    OutboxEmail,
    SignalKind,
    Suppression,
    SuppressionReason,
)
from tests.sending_helpers import now_floor, run_engine, write_campaign


@pytest.fixture
def sent(make_app, make_subscriber, smtp_sink, work, tmp_path):
    """A campaign sent to two people; returns (runtime, {address: delivery id})."""
    app = make_app(BOUNCE_ADDRESS="bounces@store.example", MARKETING_CAPS="", QUIET_HOURS="")
    runtime = app.extensions["newsletter"]
    for address in ("ann@example.com", "bob@example.com"):
        make_subscriber(address, topics=("early-access",))
    folder = write_campaign(tmp_path, waves=[("all", "all", now_floor() - timedelta(minutes=1))])
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()
    run_engine(runtime, work)
    envelopes = smtp_sink.take_envelopes()
    assert len(envelopes) == 2
    return runtime, {rcpts[0]: verp.read(runtime.settings, sender) for sender, rcpts, _ in envelopes}


def test_a_hard_bounce_lands_on_its_delivery_and_suppresses_at_once(sent):
    runtime, refs = sent
    signal = Signal(
        SignalKind.BOUNCE_HARD,
        "smtp",
        verp=refs["ann@example.com"],
        status_code="5.1.1",
        diagnostic="smtp; 550 5.1.1 user unknown",
        provider_event_id="<dsn-1@mx.example>",
    )
    with runtime.sessions() as session:
        done = record(session, runtime.settings, signal)
        session.commit()
        again = record(session, runtime.settings, signal)  # the same bounce, delivered twice
        session.commit()
        delivery = session.get(Delivery, refs["ann@example.com"].row_id)
        events = session.scalars(select(DeliveryEvent)).all()
        entry = session.scalar(select(Suppression))
    assert done.delivery_id == delivery.id and done.suppressed == SuppressionReason.BOUNCED
    assert again.duplicate and len(events) == 1
    assert (events[0].delivery_id, events[0].campaign_id) == (delivery.id, delivery.campaign_id)
    assert (events[0].status_code, events[0].kind) == ("5.1.1", SignalKind.BOUNCE_HARD)
    assert delivery.bounce_kind == "hard" and delivery.bounced_at is not None
    assert entry.reason == SuppressionReason.BOUNCED and entry.source == "smtp:5.1.1"


def test_soft_bounces_suppress_only_past_the_limit_within_the_window(sent):
    runtime, refs = sent
    ref = refs["bob@example.com"]
    with runtime.sessions() as session:
        first = record(
            session, runtime.settings, Signal(SignalKind.BOUNCE_SOFT, "smtp", verp=ref, status_code="4.2.2")
        )
        clock.travel(timedelta(days=31))  # the first one falls out of the 30-day window
        second = record(session, runtime.settings, Signal(SignalKind.BOUNCE_SOFT, "smtp", verp=ref))
        third = record(session, runtime.settings, Signal(SignalKind.BOUNCE_SOFT, "smtp", verp=ref))
        assert first.suppressed is second.suppressed is third.suppressed is None
        fourth = record(session, runtime.settings, Signal(SignalKind.BOUNCE_SOFT, "smtp", verp=ref))
        session.commit()
        assert fourth.suppressed == SuppressionReason.BOUNCED
        assert session.scalar(select(Suppression.note)) == "3 soft bounces in 30 days"
        assert session.get(Delivery, ref.row_id).bounce_kind == "soft"


def test_a_complaint_suppresses_and_writes_the_consent_ledger(sent):
    runtime, refs = sent
    with runtime.sessions() as session:
        delivery = session.get(Delivery, refs["ann@example.com"].row_id)
        done = record(
            session, runtime.settings, Signal(SignalKind.COMPLAINT, "import", message_id=delivery.message_id)
        )
        session.commit()
        [ledger] = session.scalars(
            select(ConsentEvent).where(ConsentEvent.action == ConsentAction.COMPLAINED)
        )
        assert done.suppressed == SuppressionReason.COMPLAINED and done.campaign_id == delivery.campaign_id
        assert session.get(Delivery, delivery.id).complained_at is not None
        assert ledger.subscriber_id == delivery.subscriber_id and ledger.details == {
            "campaign_id": delivery.campaign_id
        }


def test_a_signal_naming_no_message_of_ours_changes_nothing(sent):
    runtime, _refs = sent
    with runtime.sessions() as session:
        done = record(
            session, runtime.settings, Signal(SignalKind.BOUNCE_HARD, "smtp", message_id="<not-ours@x>")
        )
        gone = record(
            session, runtime.settings, Signal(SignalKind.COMPLAINT, "smtp", verp=verp.VerpRef("d", 10**9))
        )
        session.commit()
        assert done.unmatched and gone.unmatched
        assert (
            session.scalars(select(DeliveryEvent)).all() == []
            and session.scalars(select(Suppression)).all() == []
        )


def test_a_bounce_of_transactional_mail_lands_on_its_outbox_row(make_app, signup, smtp_sink, work):
    app = make_app(BOUNCE_ADDRESS="bounces@store.example")
    runtime = app.extensions["newsletter"]
    signup("carl@example.com", topics=["newsletter"])
    work()
    [(sender, _rcpts, _message)] = smtp_sink.take_envelopes()
    ref = verp.read(runtime.settings, sender)
    with runtime.sessions() as session:
        done = record(
            session, runtime.settings, Signal(SignalKind.BOUNCE_HARD, "smtp", verp=ref, status_code="5.1.1")
        )
        session.commit()
        [event] = session.scalars(select(DeliveryEvent))
        assert event.outbox_id == session.scalar(select(OutboxEmail.id)) and event.delivery_id is None
        assert done.suppressed == SuppressionReason.BOUNCED
