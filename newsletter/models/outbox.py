"""Transactional mail waiting to go out: the row is the promise, the RQ job the courier.

The row is written in the same transaction as the signup, so a signup is never lost
when Redis is down: a worker's sweep finds unsent rows that no live job carries and
enqueues them again. Attempts are counted on the row, whatever job made them; after
``MAX_ATTEMPTS`` (or a permanent refusal) the row is given up: ``failed_at`` and the reason.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core import clock
from newsletter.core.db import Base, enum_type

#: How many times a transactional email is tried, across every job and sweep, before it is given up.
MAX_ATTEMPTS = 10


class OutboxKind(enum.StrEnum):
    CONFIRM = "confirm"  #: "please confirm your subscription"
    ALREADY_SUBSCRIBED = "already_subscribed"  #: an active subscriber signed up again
    PARTNER_INVITE = "partner_invite"  #: consent came from a partner store: please confirm with us
    WELCOME = "welcome"  #: sent once per subscriber, after their first confirmation
    LINKS = "links"  #: "send me my links": the preference centre's link, asked for on the web
    # Store mail (newsletter.store_events): to the address in the store's event, no subscriber needed.
    ORDER_PLACED = "order_placed"  #: thank you for your order
    ORDER_SHIPPED = "order_shipped"  #: your order is on its way
    ORDER_DELAYED = "order_delayed"  #: your order is late: what happened, the new date, what you can do
    ORDER_CANCELLED = "order_cancelled"  #: your order is cancelled
    ITEM_OUT_OF_STOCK = "item_out_of_stock"  #: sorry, an item is out of stock; the alternatives
    BACK_IN_STOCK = "back_in_stock"  #: the item you asked about is back


#: Kinds sent to a store event's address (``store_event_id``), not to a subscriber.
STORE_KINDS = frozenset(
    {
        OutboxKind.ORDER_PLACED,
        OutboxKind.ORDER_SHIPPED,
        OutboxKind.ORDER_DELAYED,
        OutboxKind.ORDER_CANCELLED,
        OutboxKind.ITEM_OUT_OF_STOCK,
        OutboxKind.BACK_IN_STOCK,
    }
)


class OutboxEmail(Base):
    __tablename__ = "outbox_emails"
    __table_args__ = (
        Index("ix_outbox_emails_unsent", "sent_at", "created_at"),
        Index("ix_outbox_emails_mailbox", "mailbox_hash", "created_at"),
        Index("ix_outbox_emails_message_id", "message_id"),
        #: a person's store mail (their profile in the dashboard, their data export), found by event
        Index("ix_outbox_emails_store_event", "store_event_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[OutboxKind] = mapped_column(enum_type(OutboxKind, 40))
    #: None for store mail (STORE_KINDS): the customer need not be a subscriber, and is not made one
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    #: set by the worker that took it; a stale claim is taken over by the sweep
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    message_id: Mapped[str | None] = mapped_column(String(255))
    #: claims so far, by any job; the row is given up at MAX_ATTEMPTS
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: the signup request (its ``signup_requested`` event) a confirmation link in this email answers
    request_event_id: Mapped[int | None] = mapped_column(ForeignKey("consent_events.id"))
    #: sha256 of the mailbox (``addresses.mailbox_key``): the daily cap's count when Redis is down
    mailbox_hash: Mapped[str | None] = mapped_column(String(64))
    #: given up (permanent refusal, or MAX_ATTEMPTS); last_error says why
    failed_at: Mapped[datetime | None]
    #: the RQ job carrying the row when it is not the row's own ``outbox-<id>`` (a batch of invitations)
    job_id: Mapped[str | None] = mapped_column(String(64))
    #: held back until then (a partner's daily invitation cap); neither claimed nor swept before
    not_before: Mapped[datetime | None]
    #: store mail: the event whose address and details the email carries
    store_event_id: Mapped[int | None] = mapped_column(ForeignKey("store_events.id", ondelete="CASCADE"))
