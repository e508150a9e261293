"""The consent ledger: one append-only row per consent event (GDPR Art. 7 evidence)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, event
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core import clock
from newsletter.core.db import Base, enum_type


class ConsentAction(enum.StrEnum):
    SIGNUP_REQUESTED = "signup_requested"  #: the form was submitted
    CONFIRMED = "confirmed"  #: the person clicked Confirm (double opt-in)
    PREFERENCES_CHANGED = "preferences_changed"  #: topics, frequency, pause, time zone or name
    UNSUBSCRIBED = "unsubscribed"  #: left one topic or everything
    PARTNER_SHARE_GRANTED = "partner_share_granted"  #: may share the address with a named partner
    PARTNER_SHARE_WITHDRAWN = "partner_share_withdrawn"
    PARTNER_IMPORTED = "partner_imported"  #: a partner sent us this person's consent; invited to confirm
    PARTNER_DISCLOSED = "partner_disclosed"  #: the address went to a named partner (an export; Art. 15(1)(c))
    PARTNER_WITHDRAWN = "partner_withdrawn"  #: a partner told us the person withdrew sharing with us
    ERASED = "erased"  #: personal data erased on request; this ledger stays, pseudonymised
    IMPORTED = "imported"  #: consent given elsewhere, brought in with its evidence (subscribers.imports)
    COMPLAINED = "complained"  #: marked one of our messages as spam (ARF or a provider): suppressed


class LedgerIsAppendOnly(Exception):
    """Raised when code tries to change or delete a consent event."""


class ConsentEvent(Base):
    __tablename__ = "consent_events"
    __table_args__ = (Index("ix_consent_events_subscriber", "subscriber_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id"))
    action: Mapped[ConsentAction] = mapped_column(enum_type(ConsentAction, 40))
    #: topic slugs the event is about
    topics: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: UTC
    occurred_at: Mapped[datetime] = mapped_column(default=clock.now)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    #: which form or channel, e.g. "web:subscribe"
    source: Mapped[str] = mapped_column(String(100))
    #: the exact consent wording the person was shown: its version and sha256
    wording_version: Mapped[str | None] = mapped_column(String(50))
    wording_hash: Mapped[str | None] = mapped_column(String(64))
    #: anything else worth keeping as evidence (before/after, ...)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


@event.listens_for(ConsentEvent, "before_update")
@event.listens_for(ConsentEvent, "before_delete")
def _refuse_changes(_mapper, _connection, target: ConsentEvent) -> None:
    raise LedgerIsAppendOnly(f"consent event {target.id} cannot be changed or deleted")


#: The one sanctioned change: erasure pseudonymises the network identity of old events
#: (``newsletter.subscribers.data_rights``); it goes through a Core UPDATE, never the ORM.
PSEUDONYMISED_IP = "0.0.0.0"
