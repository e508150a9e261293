"""The tallies the database keeps (campaigns/tallies.py) equal a full recount, after every kind of change.

A real campaign is sent through the SMTP sink, then bounces, complaints, clicks (one turned into a
scanner visit), unsubscribes, early-access redemptions and reward codes happen, rows move state
and a subscriber is erased; after each step ``report`` from the tallies equals ``report`` recounted
from the rows, before and after a fold. Both databases (conftest's ``database_url``).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from newsletter.campaigns import rewards, tallies
from newsletter.campaigns.report import report
from newsletter.core import clock
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.models import (
    Campaign,
    CampaignHourTally,
    Delivery,
    DeliveryEvent,
    DeliveryState,
    DeliveryTally,
    SignalKind,
    Subscriber,
)
from tests.feedback_helpers import send_campaign
from tests.sending_helpers import now_floor

ADDRESSES = [f"p{i}@example.com" for i in range(6)]


@pytest.fixture
def runtime(make_app):
    """No caps and no quiet hours: the whole campaign goes out at once."""
    app = make_app(MARKETING_CAPS="", QUIET_HOURS="", BOUNCE_ADDRESS="bounces@store.example")
    return app.extensions["newsletter"]


def both(runtime) -> tuple[dict, dict]:
    with runtime.sessions() as session:
        campaign = session.scalar(select(Campaign).where(Campaign.slug == "test-sale"))
        fast = report(session, runtime.settings, campaign).to_json()
        slow = report(session, runtime.settings, campaign, recount=True).to_json()
    return fast, slow


def assert_equal_to_a_recount(runtime) -> dict:
    fast, slow = both(runtime)
    assert fast == slow
    with runtime.sessions() as session:
        tallies.fold(session)
    assert both(runtime) == (slow, slow)
    return slow


def ids(runtime) -> list[int]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Delivery.id).order_by(Delivery.id)))


def signal(runtime, kind: SignalKind, delivery_id: int, **extra) -> None:
    with runtime.sessions() as session:
        record(session, runtime.settings, Signal(kind, "test", delivery_id=delivery_id, **extra))
        session.commit()


def test_the_tallies_equal_a_recount_after_sends_feedback_and_erasure(
    runtime, make_subscriber, smtp_sink, work, tmp_path
):
    public_at = now_floor() + timedelta(days=2)
    send_campaign(
        runtime,
        make_subscriber,
        smtp_sink,
        work,
        tmp_path,
        ADDRESSES,
        reward='prefix = "VIP"\nexpires_in = "30d"',
        public_at=public_at,
    )
    data = assert_equal_to_a_recount(runtime)
    assert data["total"]["delivered"] == 6
    assert data["reward_codes"] == {"assigned": 6, "redeemed": 0}
    assert sum(data["timeline"]["sent"].values()) == 6

    first, second, third, fourth, fifth, _ = ids(runtime)
    signal(runtime, SignalKind.BOUNCE_HARD, first, status_code="5.1.1")
    signal(runtime, SignalKind.BOUNCE_SOFT, second, status_code="4.2.2")
    signal(runtime, SignalKind.COMPLAINT, third)
    signal(runtime, SignalKind.CLICK, fourth, link=0)
    signal(runtime, SignalKind.CLICK, fourth, link=1)
    signal(runtime, SignalKind.CLICK, fifth, link=0)
    signal(runtime, SignalKind.UNSUBSCRIBE, fifth)
    data = assert_equal_to_a_recount(runtime)
    total = data["total"]
    assert (total["bounced_hard"], total["bounced_soft"], total["complained"]) == (1, 1, 1)
    assert (total["unique_clicks"], total["unsubscribed"]) == (2, 1)
    assert sum(link["clicks"] for link in data["links"]) == 3

    with runtime.sessions() as session:
        # a click found to be a link scanner's (feedback/clicks.py turns it over in place)
        session.execute(
            update(DeliveryEvent)
            .where(DeliveryEvent.delivery_id == fifth, DeliveryEvent.kind == SignalKind.CLICK)
            .values(kind=SignalKind.SCANNER)
        )
        # an early-access redemption an hour later, and a reward code used at the store
        session.execute(
            update(Delivery).where(Delivery.id == fourth).values(redeemed_at=clock.now() + timedelta(hours=1))
        )
        code = session.scalar(select(Delivery.reward_code).where(Delivery.id == third))
        assert rewards.redeem(session, runtime.settings, code, clock.now()) == "redeemed"
        # rows in other states, with reasons (as the sending engine leaves them)
        for delivery_id, moved, reason in (
            (second, DeliveryState.DEFERRED, "quiet hours"),
            (first, DeliveryState.SKIPPED, "suppressed"),
        ):
            moving = update(Delivery).where(Delivery.id == delivery_id)
            session.execute(moving.values(state=moved, reason=reason))
        session.commit()
    data = assert_equal_to_a_recount(runtime)
    total = data["total"]
    assert (total["redemptions"], data["reward_codes"]["redeemed"]) == (1, 1)
    assert total["deferred"] == {"quiet hours": 1} and total["skipped"] == {"suppressed": 1}
    assert sum(link["scanners"] for link in data["links"]) == 1
    assert len(data["timeline"]["redeemed"]) == 1

    with runtime.sessions() as session:
        # erasure deletes the person; the ledger rows go with them (ON DELETE CASCADE)
        session.execute(Subscriber.__table__.delete().where(Subscriber.email == ADDRESSES[3]))
        session.commit()
    data = assert_equal_to_a_recount(runtime)
    assert data["total"]["redemptions"] == 0 and data["total"]["delivered"] == 3


def test_a_fold_leaves_one_row_per_group_and_the_same_sums(
    runtime, make_subscriber, smtp_sink, work, tmp_path
):
    send_campaign(runtime, make_subscriber, smtp_sink, work, tmp_path, ADDRESSES)
    before, _ = both(runtime)
    with runtime.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(DeliveryTally))
        assert rows > 1  # every state a row passed through left its -1 and +1
        last = tallies.fold(session)
        groups = session.execute(
            select(DeliveryTally.wave_id, DeliveryTally.state, DeliveryTally.reason, func.count()).group_by(
                DeliveryTally.wave_id, DeliveryTally.state, DeliveryTally.reason
            )
        ).all()
        assert [n for *_, n in groups] == [1] and groups[0].state == "sent"
        hours = session.scalar(select(func.count()).select_from(CampaignHourTally))
        # nothing changed since: nothing to fold, and the rows stay as they are
        assert tallies.fold(session, last) == last
        assert session.scalar(select(func.count()).select_from(CampaignHourTally)) == hours
    assert both(runtime) == (before, before)
