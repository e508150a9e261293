"""Counts kept so that the dashboard never scans a big table per request (admin overview).

The consent ledger is append-only, so its events are counted once: ``consent_days`` holds how
many events of each kind happened on each day, caught up from ``rollup_marks.last_id`` (the
highest ledger id counted) by ``subscribers.growth``. Subscribers by status and the suppression list
are tallied from the changes triggers append (``tally_changes``), a finished campaign's delivered count once.
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


class Tally(Base):
    """A count kept up to date: ``subscribers:<status>`` and ``suppressions``, as of the last fold."""

    __tablename__ = "tallies"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    n: Mapped[int] = mapped_column(default=0)


class TallyChange(Base):
    """+n or -n for a tally, appended by triggers on ``subscribers`` and ``suppressions`` (see the
    migration) whatever makes the change: the ORM, a Core bulk insert, an import, an erasure.
    Appending locks nothing shared, so signups never queue behind a counter row;
    ``subscribers.growth`` folds the rows into ``tallies`` and deletes them in one statement."""

    __tablename__ = "tally_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    delta: Mapped[int]
