"""The import ledger as a checkpoint: each chunk of a file commits with the count of records done.

An import's row (``partner_imports``) is written once the whole file is verified; every chunk
of ``files.CHUNK_RECORDS`` records is applied in a transaction that first moves the row's
``applied_records`` on by a conditional UPDATE (so two runs of one file never apply the same
chunk: the second waits for the first's row lock, then finds the count moved and stops) and
last stores the report so far. A run killed at any moment leaves whole chunks only; the next
run of the same file (same SHA-256, same partner) finds the unfinished row and goes on after
its last committed chunk.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.models import PartnerImport
from newsletter.partners.files import Envelope


class ImportInterrupted(Exception):
    """The import stopped part-way; the chunks before it are kept and a new run goes on from there."""


def record_import(
    session: Session,
    partner_id: str,
    kind: str,
    envelope: Envelope,
    channel: str,
    now: datetime,
    *,
    topics: list[str] | None = None,
    complete: bool = False,
) -> PartnerImport:
    """The import's row (file hash, creation time, channel); its report is filled in as it goes."""
    log = PartnerImport(
        partner_id=partner_id,
        kind=kind,
        file_sha256=envelope.sha256,
        file_created_at=envelope.created_at,
        imported_at=now,
        channel=channel,
        records=envelope.records,
        report={},
        applied_records=envelope.records if complete else 0,
        completed_at=now if complete else None,
        topics=topics,
    )
    session.add(log)
    session.flush()
    return log


def unfinished(session: Session, partner_id: str, kind: str, file_sha256: str) -> PartnerImport | None:
    """The stopped import of this very file, if there is one (at most one: a partial unique index)."""
    return session.scalar(
        select(PartnerImport).where(
            PartnerImport.partner_id == partner_id,
            PartnerImport.kind == kind,
            PartnerImport.file_sha256 == file_sha256,
            PartnerImport.completed_at.is_(None),
        )
    )


def claim_chunk(session: Session, import_id: int, done: int, size: int) -> None:
    """First statement of a chunk's transaction: move the checkpoint from ``done`` to ``done + size``.

    Raises ImportInterrupted if another run moved it first (the row lock makes a concurrent run
    wait here until the other chunk is committed or rolled back).
    """
    moved = session.execute(
        update(PartnerImport)
        .where(PartnerImport.id == import_id, PartnerImport.applied_records == done)
        .values(applied_records=done + size)
        .execution_options(synchronize_session=False)
    ).rowcount
    if moved != 1:
        raise ImportInterrupted(
            "another run of this import is applying it now; wait for it (or run it again once it stopped)"
        )


def save_progress(
    session: Session, import_id: int, report: dict[str, Any], *, completed_at: datetime | None
) -> None:
    """Last statement of a chunk's transaction: the report so far, and the end time after the last chunk."""
    session.execute(
        update(PartnerImport)
        .where(PartnerImport.id == import_id)
        .values(report=report, completed_at=completed_at)
        .execution_options(synchronize_session=False)
    )
