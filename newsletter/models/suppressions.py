"""Addresses the engine must never mail, keyed by hash so an entry survives erasure."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core import clock
from newsletter.core.db import Base, enum_type


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"  #: left everything; a fresh double opt-in lifts it
    BOUNCED = "bounced"  #: hard bounce (5xx at RCPT); a fresh double opt-in lifts it
    COMPLAINED = "complained"  #: marked as spam; only an operator lifts it
    ERASED = "erased"  #: data erased on request; a fresh double opt-in lifts it
    MANUAL = "manual"  #: added by an operator; only an operator lifts it


#: Reasons that a person's own fresh double opt-in may lift; the others need an operator.
LIFTED_BY_OPT_IN = {SuppressionReason.UNSUBSCRIBED, SuppressionReason.BOUNCED, SuppressionReason.ERASED}


class Suppression(Base):
    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: sha256 of the lower-cased normalised address (models.subscribers.address_hash)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[SuppressionReason] = mapped_column(enum_type(SuppressionReason, 20))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    #: where it came from: "web:unsubscribe", "cli", "import:FILE", "smtp:550", ...
    source: Mapped[str] = mapped_column(String(100), default="")
    note: Mapped[str] = mapped_column(String(300), default="")
