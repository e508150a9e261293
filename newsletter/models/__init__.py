"""All tables, imported in one place so Alembic and tests see the whole schema."""

from newsletter.models.consent import ConsentAction, ConsentEvent
from newsletter.models.outbox import OutboxEmail, OutboxKind
from newsletter.models.subscribers import (
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Topic,
)

__all__ = [
    "ConsentAction",
    "ConsentEvent",
    "OutboxEmail",
    "OutboxKind",
    "Subscriber",
    "SubscriberStatus",
    "Subscription",
    "SubscriptionStatus",
    "Topic",
]
