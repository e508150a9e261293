"""The list's growth per day and its totals, from the consent ledger, without a scan per request.

The ledger is append-only, so each event is counted once into ``consent_days`` (day, kind, n):
:func:`catch_up` adds the events above the high-water mark ``rollup_marks.last_id`` and moves the
mark, and a read adds the few events above the mark live (a primary-key range), so the figures
are exact even when a catch-up was skipped. Erasure keeps the person's events (pseudonymised by an
UPDATE of ip and user agent, which this count never reads) and appends an ``erased`` event.

A mark over ids is only safe if no event below it can still appear. SQLite has one writer at a
time, so ids become visible in order. PostgreSQL hands out ids before commit, so a transaction
that took id 7 may commit after one that took id 8: the catch-up first takes a lock that waits for
every transaction still inserting into the ledger (``SHARE ROW EXCLUSIVE``, a few milliseconds; it
gives up after ``LOCK_TIMEOUT`` and leaves the catching up to the next request).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import String, and_, case, func, select, text, type_coerce, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from newsletter.core.db import dialect_insert
from newsletter.models import (
    ConsentAction,
    ConsentDay,
    ConsentEvent,
    RollupMark,
    SubscriberStatus,
    Tally,
    TallyChange,
)

MARK = "consent_days"
TOPIC_ONLY = "unsubscribed_topic"
LOCK_TIMEOUT = "250ms"
#: the chart's series: which ledger kinds each one counts
SERIES: dict[str, tuple[str, ...]] = {
    # a form or order-invitation signup, a partner's invitation, an import with consent given elsewhere
    "signups": (ConsentAction.SIGNUP_REQUESTED, ConsentAction.PARTNER_IMPORTED, ConsentAction.IMPORTED),
    # a confirmation click; an import arrives confirmed
    "confirmations": (ConsentAction.CONFIRMED, ConsentAction.IMPORTED),
    # left everything (leaving one topic is counted apart, as unsubscribed_topic)
    "unsubscribes": (ConsentAction.UNSUBSCRIBED,),
    "erasures": (ConsentAction.ERASED,),
}
WINDOWS = (30, 90, 365)


def _day(value: date | datetime | str) -> date:
    # SQLite's date() gives text, PostgreSQL's a date
    return date.fromisoformat(value) if isinstance(value, str) else value


def _counts(session: Session, after_id: int, upto_id: int | None = None) -> list[tuple[date, str, int]]:
    """The ledger's events with ``after_id < id <= upto_id`` by day and kind (a primary-key range)."""
    scope = ConsentEvent.details["scope"].as_string()
    kind = case(
        (and_(ConsentEvent.action == ConsentAction.UNSUBSCRIBED, scope == "topic"), TOPIC_ONLY),
        else_=type_coerce(ConsentEvent.action, String),  # the text as stored, not the enum
    )
    day = func.date(ConsentEvent.occurred_at)
    statement = select(day, kind, func.count()).where(ConsentEvent.id > after_id)
    if upto_id is not None:
        statement = statement.where(ConsentEvent.id <= upto_id)
    # by position: PostgreSQL takes the bound parameters in the SELECT and GROUP BY as different
    rows = session.execute(statement.group_by(text("1"), text("2"))).all()
    return [(_day(d), k, n) for d, k, n in rows]


def _mark(session: Session) -> int:
    return session.scalar(select(RollupMark.last_id).where(RollupMark.name == MARK)) or 0


def catch_up(session: Session) -> int:
    """Count the ledger's events above the mark into ``consent_days``; returns how many.

    The caller commits soon after: on PostgreSQL the lock is held until then.
    """
    if (session.scalar(select(func.max(ConsentEvent.id))) or 0) <= _mark(session):
        return 0  # nothing new: no lock, no write (the usual case between two signups)
    if session.get_bind().dialect.name == "postgresql":
        try:
            with session.begin_nested():
                session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                session.execute(text("LOCK TABLE consent_events IN SHARE ROW EXCLUSIVE MODE"))
        except OperationalError:
            return 0  # a long import is writing the ledger: the read counts the tail live
    # a write first: on SQLite it takes the write lock, so the reads below see the latest ledger
    session.execute(dialect_insert(session, RollupMark).values(name=MARK, last_id=0).on_conflict_do_nothing())
    last = _mark(session)
    top = session.scalar(select(func.max(ConsentEvent.id)).where(ConsentEvent.id > last))
    if top is None:
        return 0
    rows = _counts(session, last, top)
    insert = dialect_insert(session, ConsentDay)
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["day", "kind"], set_={"n": ConsentDay.n + insert.excluded.n}
        ),
        [{"day": d, "kind": k, "n": n} for d, k, n in rows],
    )
    moved = session.execute(
        update(RollupMark).where(RollupMark.name == MARK, RollupMark.last_id == last).values(last_id=top)
    )
    if moved.rowcount != 1:  # another catch-up counted them first (cannot happen under the lock)
        raise RuntimeError("consent_days: the mark moved during a catch-up")
    session.flush()
    return sum(n for _, _, n in rows)


def recount(session: Session) -> None:
    """Count the whole ledger afresh (tests compare it with the caught-up rollup; repairs)."""
    session.execute(ConsentDay.__table__.delete())
    session.execute(update(RollupMark).where(RollupMark.name == MARK).values(last_id=0))
    catch_up(session)


@dataclass(frozen=True)
class Growth:
    """Per-day counts of the window, oldest first, by series; the days are UTC dates."""

    days: list[date]
    series: dict[str, list[int]]
    #: people who left one topic but kept others, per day
    left_a_topic: list[int]

    def total(self, name: str) -> int:
        return sum(self.series[name])


def growth(session: Session, today: date, days: int) -> Growth:
    """The last ``days`` days up to ``today`` (the engine's clock, UTC): the rollup plus the live tail."""
    start = today - timedelta(days=days - 1)
    by_day: dict[tuple[date, str], int] = {}

    def add(rows: Iterable[tuple[date, str, int]]) -> None:
        for d, k, n in rows:
            if start <= d <= today:
                by_day[(d, k)] = by_day.get((d, k), 0) + n

    add(
        session.execute(
            select(ConsentDay.day, ConsentDay.kind, ConsentDay.n).where(
                ConsentDay.day >= start, ConsentDay.day <= today
            )
        ).all()
    )
    add(_counts(session, _mark(session)))
    dates = [start + timedelta(days=i) for i in range(days)]
    series = {
        name: [sum(by_day.get((d, k), 0) for k in kinds) for d in dates] for name, kinds in SERIES.items()
    }
    return Growth(dates, series, [by_day.get((d, TOPIC_ONLY), 0) for d in dates])


@dataclass(frozen=True)
class Totals:
    confirmed: int
    pending: int
    unsubscribed: int
    erased: int
    suppressed: int


#: PostgreSQL: each change row is deleted by exactly one fold (a concurrent DELETE skips the rows
#: another deleted), so two requests folding at once never count a change twice
_FOLD_PG = """
WITH folded AS (DELETE FROM tally_changes RETURNING name, delta)
INSERT INTO tallies (name, n) SELECT name, sum(delta) FROM folded GROUP BY name
ON CONFLICT (name) DO UPDATE SET n = tallies.n + excluded.n
"""
#: SQLite: the INSERT takes the one write lock, so nothing is appended between the two statements
_FOLD_SQLITE = (
    "INSERT INTO tallies (name, n) SELECT name, sum(delta) FROM tally_changes "
    "GROUP BY name ON CONFLICT (name) DO UPDATE SET n = tallies.n + excluded.n",
    "DELETE FROM tally_changes",
)


def fold_changes(session: Session) -> None:
    """Add the changes the triggers appended to ``tallies`` (the caller commits)."""
    if session.scalar(select(TallyChange.id).limit(1)) is None:
        return  # nothing to fold: no write
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(_FOLD_PG))
    else:
        for statement in _FOLD_SQLITE:
            session.execute(text(statement))


def totals(session: Session) -> Totals:
    """Subscribers by status and the suppression list's length, from the tallies (fold first), with
    the changes not folded yet added live (a few rows, unless a fold was skipped)."""
    tally = dict(session.execute(select(Tally.name, Tally.n)).all())
    for name, delta in session.execute(
        select(TallyChange.name, func.sum(TallyChange.delta)).group_by(TallyChange.name)
    ):
        tally[name] = tally.get(name, 0) + delta

    def subscribers(status: SubscriberStatus) -> int:
        return tally.get(f"subscribers:{status.value}", 0)

    return Totals(
        confirmed=subscribers(SubscriberStatus.ACTIVE),
        pending=subscribers(SubscriberStatus.PENDING),
        unsubscribed=subscribers(SubscriberStatus.UNSUBSCRIBED),
        erased=subscribers(SubscriberStatus.ERASED),
        suppressed=tally.get("suppressions", 0),
    )
