"""Addresses the engine must never mail, keyed by hash so an entry survives erasure."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core import clock
from newsletter.core.db import Base, enum_type
from newsletter.core.vocabulary import LIFTED_BY_OPT_IN, SuppressionReason

__all__ = ["LIFTED_BY_OPT_IN", "Suppression", "SuppressionReason"]


class Suppression(Base):
    __tablename__ = "suppressions"
    #: the dashboard's list filtered by reason, newest first (subscribers/suppression.py:browse)
    __table_args__ = (Index("ix_suppressions_reason", "reason", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: sha256 of the lower-cased normalised address (models.subscribers.address_hash)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[SuppressionReason] = mapped_column(enum_type(SuppressionReason, 20))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    #: where it came from: "web:unsubscribe", "cli", "import:FILE", "smtp:550", ...
    source: Mapped[str] = mapped_column(String(100), default="")
    note: Mapped[str] = mapped_column(String(300), default="")
