"""Counts kept so that the dashboard never scans a big table per request (admin overview).

The consent ledger is append-only, so its events are counted once: ``consent_days`` holds how
many events of each kind happened on each day, caught up from ``rollup_marks.last_id`` (the
highest ledger id counted) by ``subscribers.growth``.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core.db import Base


class ConsentDay(Base):
    __tablename__ = "consent_days"

    #: the UTC day of the event's ``occurred_at``
    day: Mapped[date] = mapped_column(primary_key=True)
    #: the event's action, or ``unsubscribed_topic`` for leaving one topic only
    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    n: Mapped[int] = mapped_column(default=0)


class RollupMark(Base):
    """How far a rollup has counted its append-only table."""

    __tablename__ = "rollup_marks"

    #: the rollup, e.g. "consent_days"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    #: the highest id of the table counted in it
    last_id: Mapped[int] = mapped_column(default=0)
