"""Events the store sends (orders, stock): one row per store event id, so a retry is answered the same."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core import clock
from newsletter.core.db import Base


class StoreEvent(Base):
    __tablename__ = "store_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    #: the store's own id for the event; unique, so a retried event is found, not applied again
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    #: the customer's address as the store gave it (the person need not be a subscriber)
    email: Mapped[str] = mapped_column(String(320))
    #: the event as received (validated): what the email says, and a request's evidence
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: what the API answered for this event, answered again to a retry
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


#: a first order is one with no earlier order_placed for the address, in any letter case; on the
#: column, not the string "email" (which compiled to lower('email'), a constant, unlike migration 0011)
Index("ix_store_events_email_lower", func.lower(StoreEvent.email))


class OrderInvitation(Base):
    """The one newsletter invitation an address ever gets with a thank-you for its first order.

    Keyed by the address hash, so "once per address, ever" is a unique constraint; erasure deletes it
    (the erasure's suppression entry then keeps the address from being invited again).
    """

    __tablename__ = "order_invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: ``address_hash`` of the invited address
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: the order_placed event whose thank-you carries the invitation; None once that event is gone
    store_event_id: Mapped[int | None] = mapped_column(ForeignKey("store_events.id", ondelete="SET NULL"))
    invited_at: Mapped[datetime] = mapped_column(default=clock.now)
    #: when the person joined through the link (their own click on the page, never the email itself)
    accepted_at: Mapped[datetime | None]
