"""What the engine holds about one subscriber, for operators."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.models import ConsentEvent
from newsletter.services.signup import find_subscriber


def describe_subscriber(session: Session, normalized_email: str) -> dict[str, Any] | None:
    """Status, topics and the full consent ledger, JSON-ready; None if unknown."""
    subscriber = find_subscriber(session, normalized_email)
    if subscriber is None:
        return None
    events = session.scalars(
        select(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber.id).order_by(ConsentEvent.id)
    )
    return {
        "email": subscriber.email,
        "first_name": subscriber.first_name,
        "status": subscriber.status.value,
        "created_at": subscriber.created_at.isoformat() + "Z",
        "confirmed_at": subscriber.confirmed_at.isoformat() + "Z" if subscriber.confirmed_at else None,
        "topics": {s.topic.slug: s.status.value for s in subscriber.subscriptions},
        "consent_ledger": [
            {
                "action": e.action.value,
                "at": e.occurred_at.isoformat() + "Z",
                "topics": e.topics,
                "ip": e.ip,
                "user_agent": e.user_agent,
                "source": e.source,
                "wording_version": e.wording_version,
                "wording_sha256": e.wording_hash,
                "details": e.details,
            }
            for e in events
        ],
    }
