"""What the store tells us about its customers, keyed by address hash (audiences filter on it).

Keyed by hash, not address: a customer who never subscribed is never mailed because of
this data, and an erasure removes the row with the subscriber's other data.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core import clock
from newsletter.core.db import Base


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: models.subscribers.address_hash of the customer's address
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    orders_count: Mapped[int] = mapped_column(default=0)
    #: in the store's currency
    lifetime_value: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    #: UTC
    last_order_at: Mapped[datetime | None]
    tier: Mapped[str | None] = mapped_column(String(50))
    #: free-form attributes from the store (audiences reach them as attributes.NAME)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)
