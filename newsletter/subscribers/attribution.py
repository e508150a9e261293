"""Unsubscribes counted against the campaign whose email carried the link.

A campaign's unsubscribe links name the campaign (``c`` in the signed payload, see
``links.unsubscribe_url``). When an unsubscribe through such a link changes something, the
campaign's delivery to that person gets one ``unsubscribe`` event and ``unsubscribed_at``,
once. Written here rather than through ``feedback.record``: subscribers sits below feedback.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.models import Delivery, DeliveryEvent, SignalKind, Subscriber


def count_unsubscribe(
    session: Session, subscriber: Subscriber, campaign_id: int, *, how: str, at: datetime | None = None
) -> int | None:
    """Mark the campaign's delivery to ``subscriber`` unsubscribed; its id, or None (none, or already)."""
    delivery_id = session.scalar(
        select(Delivery.id).where(
            Delivery.campaign_id == campaign_id, Delivery.subscriber_id == subscriber.id
        )
    )
    if delivery_id is None:
        return None  # an old link of a campaign since rescheduled, or a preview's
    at = at or clock.now()
    # conditional: two unsubscribes at once still write one event
    marked = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.unsubscribed_at.is_(None))
        .values(unsubscribed_at=at)
        .execution_options(synchronize_session=False)
    )
    if marked.rowcount != 1:
        return None
    session.add(
        DeliveryEvent(
            delivery_id=delivery_id,
            campaign_id=campaign_id,
            email_hash=subscriber.email_hash,
            kind=SignalKind.UNSUBSCRIBE,
            at=at,
            source="web",
            diagnostic=how,
        )
    )
    return delivery_id
