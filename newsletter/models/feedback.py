"""What happened to a message after the relay said 250: bounces, complaints, clicks, opens, unsubscribes.

Every signal is one append-only row naming the delivery (campaign mail) or outbox row
(transactional mail) that caused it; the delivery row also carries a summary (first bounce,
complaint, first click, ...) so that a campaign's report is one indexed aggregate.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core import clock
from newsletter.core.db import Base, enum_type


class SignalKind(enum.StrEnum):
    BOUNCE_HARD = "bounce_hard"  #: 5.x.x for the recipient: suppress at once
    BOUNCE_SOFT = "bounce_soft"  #: 4.x.x (mailbox full, ...): counted; suppress past the soft limit
    COMPLAINT = "complaint"  #: "this is spam" (ARF or a provider's complaint event)
    CLICK = "click"  #: a person followed a tracked link
    SCANNER = "scanner"  #: a link scanner followed a tracked link (not a click)
    OPEN = "open"  #: the tracking pixel loaded (only with track_opens; unreliable since Apple MPP)
    UNSUBSCRIBE = "unsubscribe"  #: an unsubscribe through this message's link or List-Unsubscribe
    DELIVERED = "delivered"  #: a provider reported final delivery (informational)


class DeliveryEvent(Base):
    """One signal about one sent message.

    Append-only, with one exception: when a burst of hits shows a link scanner, the earlier
    hits of that message already stored as ``click`` become ``scanner`` (feedback/clicks.py).
    """

    __tablename__ = "delivery_events"
    __table_args__ = (
        # a provider's event id (or a bounce's Message-ID) arrives once, however often it is replayed
        UniqueConstraint("source", "provider_event_id"),
        Index("ix_delivery_events_campaign", "campaign_id", "kind", "link"),
        Index("ix_delivery_events_delivery", "delivery_id", "kind"),
        Index("ix_delivery_events_address", "email_hash", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: the campaign delivery it is about, or None for transactional mail (then outbox_id)
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox_emails.id", ondelete="CASCADE"))
    #: denormalised from the delivery for the report's aggregates
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    #: sha256 of the recipient's address (survives erasure; the soft-bounce count is per address)
    email_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[SignalKind] = mapped_column(enum_type(SignalKind, 20))
    at: Mapped[datetime] = mapped_column(default=clock.now)
    #: "smtp" (bounces serve), "import", "webhook:ses", "webhook:mailgun", "web" (clicks, unsubscribes)
    source: Mapped[str] = mapped_column(String(40))
    #: idempotency key within the source (SNS MessageId, Mailgun event id, the bounce's Message-ID)
    provider_event_id: Mapped[str | None] = mapped_column(String(255))
    #: enhanced status code ("5.1.1") and the remote MTA's diagnostic, for bounces
    status_code: Mapped[str | None] = mapped_column(String(16))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    #: index of the tracked link in the frozen campaign (clicks, scanners)
    link: Mapped[int | None]
    user_agent: Mapped[str | None] = mapped_column(String(300))
