"""Automatic protection: a campaign pauses itself when its complaint or bounce rate is too high.

The rates are per campaign, over all its waves: the deliveries with a hard bounce (or a
complaint) against the deliveries the relay accepted (state ``sent``), judged only once at
least ``RATE_MIN_SAMPLE`` were delivered. ``feedback.record`` calls :func:`check` after every
hard bounce and complaint, so it is kept cheap: the numerators come from the campaign's few
events (index ``ix_delivery_events_campaign``), and the delivered rows are counted only as
far as the decision needs (``LIMIT`` on the ``ix_deliveries_work`` range, see :func:`_delivered`).

A campaign an operator resumed while still above a limit pauses again at its next hard
bounce or complaint: resuming is the operator's call, and the next signal is a fresh one.
"""

from __future__ import annotations

import math

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from newsletter.campaigns import state
from newsletter.core.config import Settings
from newsletter.models import Campaign, Delivery, DeliveryEvent, DeliveryState, SignalKind

ACTOR = "protection"


def check(session: Session, settings: Settings, campaign_id: int) -> str | None:
    """Pause the campaign if a rate passed its threshold; returns the pause reason, or None."""
    status = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    if status not in state.ACTIVE_CAMPAIGN:
        return None  # paused, done or cancelled (or gone): nothing left to protect
    bad = dict(
        session.execute(
            select(DeliveryEvent.kind, func.count(distinct(DeliveryEvent.delivery_id)))
            .where(
                DeliveryEvent.campaign_id == campaign_id,
                DeliveryEvent.kind.in_([SignalKind.COMPLAINT, SignalKind.BOUNCE_HARD]),
            )
            .group_by(DeliveryEvent.kind)
        ).all()
    )
    limits = [
        ("complaint", "complaints", bad.get(SignalKind.COMPLAINT, 0), settings.max_complaint_rate),
        ("hard-bounce", "hard bounces", bad.get(SignalKind.BOUNCE_HARD, 0), settings.max_bounce_rate),
    ]
    # A rate passes its limit only while delivered < bad / limit: count no further than that.
    enough = max([settings.rate_min_sample] + [_needed(n, limit) for _, _, n, limit in limits if n])
    delivered = _delivered(session, campaign_id, enough)
    if delivered < settings.rate_min_sample:
        return None
    for name, plural, n, limit in limits:
        # counted as far as enough >= _needed: a count that reached _needed is not over the limit
        if n and delivered < _needed(n, limit) and n / delivered > limit:
            return _pause(session, session.get(Campaign, campaign_id), name, plural, n, delivered, limit)
    return None


def _needed(bad: int, limit: float) -> int:
    """A delivered count at which ``bad`` no longer passes ``limit`` (the smallest, plus one)."""
    if limit <= 0:
        return 1 << 62
    return math.floor(bad / limit) + 2  # one more than exact: a float's rounding cannot matter


def _delivered(session: Session, campaign_id: int, at_most: int) -> int:
    """The campaign's sent rows, counted up to ``at_most`` (an index range scan that stops early)."""
    rows = (
        select(Delivery.state)  # a column of the index: PostgreSQL can answer from the index alone
        .where(Delivery.campaign_id == campaign_id, Delivery.state == DeliveryState.SENT)
        .limit(at_most)
        .subquery()
    )
    return session.scalar(select(func.count()).select_from(rows))


def _pause(session, campaign, name, plural, n, delivered, limit) -> str | None:
    rate = f"{name} rate {n / delivered:.2%} passed the {limit:.2%} limit"
    reason = f"{rate} ({n} {plural} in {delivered} delivered)"
    if state.pause_itself(session, campaign, reason, actor=ACTOR) is not None:
        return None  # paused or cancelled a moment ago: that decision stands
    return reason
