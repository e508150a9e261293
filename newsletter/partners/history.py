"""The record of exchanges with partners (``partner_exchanges``): one row per push, pull, API call.

A row is written ``running`` and committed before any work, then finished ``done`` with its
counts or ``failed`` with one line; a row left ``running`` by a process that died is marked
``failed`` by the next exchange with that partner (it runs under the partner's lock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.models.partners import PartnerExchange

INTERRUPTED = "interrupted: the process stopped before the exchange was through"


def start(
    session: Session, partner_id: str, direction: str, channel: str, previous: PartnerExchange | None = None
) -> PartnerExchange:
    row = PartnerExchange(
        partner_id=partner_id,
        direction=direction,
        channel=channel,
        status="running",
        started_at=clock.now(),
        previous_id=previous.id if previous else None,
        skipped={},
    )
    session.add(row)
    session.flush()
    return row


def finish(
    session: Session, row: PartnerExchange, report: Any = None, *, remote_id: int | None = None
) -> None:
    """Done: the counts of the import report (``ImportReport`` or its dict) if there is one."""
    row.status, row.finished_at, row.error = "done", clock.now(), None
    if report is not None:
        counts = report if isinstance(report, dict) else report.as_dict()
        row.records = counts.get("records", row.records)
        row.invited = counts.get("invited", 0)
        row.skipped = dict(counts.get("skipped", {}))
    if isinstance(remote_id, int):
        row.remote_id = remote_id
    session.flush()


def fail(session: Session, row_id: int, error: str) -> None:
    session.execute(
        update(PartnerExchange)
        .where(PartnerExchange.id == row_id)
        .values(status="failed", finished_at=clock.now(), error=_one_line(error))
        .execution_options(synchronize_session=False)
    )


def start_committed(sessions: Callable[[], Session], partner_id: str, direction: str, channel: str) -> int:
    """A running row in its own transaction (the caller's session may roll back meanwhile)."""
    with sessions() as session:
        row = start(session, partner_id, direction, channel)
        session.commit()
        return row.id


def finish_committed(sessions: Callable[[], Session], row_id: int, report: Any, **kwargs) -> None:
    with sessions() as session:
        finish(session, session.get(PartnerExchange, row_id), report, **kwargs)
        session.commit()


def fail_committed(sessions: Callable[[], Session], row_id: int, error: str) -> None:
    with sessions() as session:
        fail(session, row_id, error)
        session.commit()


def close_interrupted(session: Session, partner_id: str, channels: tuple[str, ...]) -> int:
    """Rows of these channels left running by a process that died: failed (call under the lock)."""
    return session.execute(
        update(PartnerExchange)
        .where(
            PartnerExchange.partner_id == partner_id,
            PartnerExchange.channel.in_(channels),
            PartnerExchange.status == "running",
        )
        .values(status="failed", finished_at=clock.now(), error=INTERRUPTED)
        .execution_options(synchronize_session=False)
    ).rowcount


def last_done(session: Session, partner_id: str, direction: str, channel: str) -> PartnerExchange | None:
    return session.scalar(
        select(PartnerExchange)
        .where(
            PartnerExchange.partner_id == partner_id,
            PartnerExchange.direction == direction,
            PartnerExchange.channel == channel,
            PartnerExchange.status == "done",
        )
        .order_by(PartnerExchange.id.desc())
        .limit(1)
    )


def rows(session: Session, partner_id: str, limit: int = 50) -> list[PartnerExchange]:
    """The newest ``limit`` exchanges with the partner, oldest first."""
    newest = session.scalars(
        select(PartnerExchange)
        .where(PartnerExchange.partner_id == partner_id)
        .order_by(PartnerExchange.id.desc())
        .limit(limit)
    )
    return list(reversed(list(newest)))


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line[:497] + "..." if len(line) > 500 else line
