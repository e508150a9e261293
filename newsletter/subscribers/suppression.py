"""The suppression list: addresses never to mail, keyed by hash so entries survive erasure."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsletter.core import clock, db
from newsletter.core.keyset import Page, fetch_page
from newsletter.mail.addresses import InvalidAddress, normalize_address
from newsletter.models import Subscriber, Suppression, SuppressionReason
from newsletter.models.subscribers import address_hash
from newsletter.models.suppressions import LIFTED_BY_OPT_IN

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: A stronger reason replaces a weaker one: a complaint must never be downgraded.
_STRENGTH = {
    SuppressionReason.ERASED: 0,
    SuppressionReason.UNSUBSCRIBED: 1,
    SuppressionReason.BOUNCED: 2,
    SuppressionReason.MANUAL: 3,
    SuppressionReason.COMPLAINED: 4,
}


def find(session: Session, email_hash: str) -> Suppression | None:
    return session.scalar(select(Suppression).where(Suppression.email_hash == email_hash))


def suppressed_hashes(session: Session, hashes: Iterable[str]) -> set[str]:
    """Which of these address hashes are suppressed (one query, for batches of recipients)."""
    wanted = list(set(hashes))
    if not wanted:
        return set()
    query = select(Suppression.email_hash).where(db.among(session, Suppression.email_hash, wanted))
    return set(session.connection().scalars(query))  # Core: plain strings, no ORM row processing


def suppress(
    session: Session, email_hash: str, reason: SuppressionReason, source: str, note: str = ""
) -> Suppression:
    """Add (or strengthen) the suppression of one address hash."""
    entry = find(session, email_hash)
    if entry is None:
        entry = Suppression(
            email_hash=email_hash, reason=reason, source=source[:100], note=note[:300], created_at=clock.now()
        )
        session.add(entry)
    elif _STRENGTH[reason] > _STRENGTH[entry.reason]:
        entry.reason, entry.source, entry.note, entry.created_at = (
            reason,
            source[:100],
            note[:300],
            clock.now(),
        )
    session.flush()
    return entry


def blocks_opt_in(entry: Suppression | None) -> bool:
    """True if only an operator can lift this entry (complaints, manual entries)."""
    return entry is not None and reason_blocks_opt_in(entry.reason)


def reason_blocks_opt_in(reason: SuppressionReason) -> bool:
    """``blocks_opt_in`` for a reason read without its row."""
    return reason not in LIFTED_BY_OPT_IN


def lift_after_opt_in(session: Session, email_hash: str) -> SuppressionReason | None:
    """A fresh double opt-in lifts a liftable suppression; returns the reason it lifted."""
    entry = find(session, email_hash)
    if entry is None or blocks_opt_in(entry):
        return None
    session.delete(entry)
    session.flush()
    return entry.reason


def remove(session: Session, email_hash: str) -> bool:
    """An operator lifts any suppression."""
    return session.execute(delete(Suppression).where(Suppression.email_hash == email_hash)).rowcount > 0


def hash_for(value: str) -> str:
    """Accept an address or an already-hashed entry (64 hex digits)."""
    value = value.strip()
    if _HEX64.match(value.lower()):
        return value.lower()
    return address_hash(normalize_address(value))


def browse(
    session: Session,
    email_hash: str | None = None,
    reason: SuppressionReason | None = None,
    *,
    after: int | None = None,
    before: int | None = None,
    size: int = 50,
) -> Page:
    """The list newest first (by id, or by reason and id), or the one entry of an address hash; rows
    are (Suppression, the subscriber's address or None: the list holds hashes, not addresses)."""
    query = select(Suppression, Subscriber.email.label("email")).outerjoin(
        Subscriber, Subscriber.email_hash == Suppression.email_hash
    )
    if email_hash is not None:
        query = query.where(Suppression.email_hash == email_hash)
    if reason is not None:
        query = query.where(Suppression.reason == reason)
    return fetch_page(
        session,
        query,
        (Suppression.id,),
        Suppression.id,
        after=after,
        before=before,
        size=size,
        descending=True,
        id_of=lambda row: row.Suppression.id,
    )


# --- CSV import and export -----------------------------------------------------------------

CSV_FIELDS = ["email_hash", "reason", "created_at", "source", "note"]


def safe_cell(value: str) -> str:
    """Neutralise spreadsheet formulas (=, +, -, @, tab, CR at the start of a cell)."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value


def export_csv(session: Session) -> Iterator[str]:
    """The list as CSV text chunks, formula-injection-safe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for entry in session.scalars(select(Suppression).order_by(Suppression.id)).yield_per(1000):
        writer.writerow(
            [
                safe_cell(str(v))
                for v in (
                    entry.email_hash,
                    entry.reason.value,
                    entry.created_at.isoformat() + "Z",
                    entry.source,
                    entry.note,
                )
            ]
        )
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0
    errors: list[str] | None = None


def import_csv(session: Session, lines: Iterable[str], source: str) -> ImportReport:
    """Import a CSV with a header row: ``email`` or ``email_hash``, optional ``reason`` and ``note``.

    Every row is checked first; a file with any bad row changes nothing.
    """
    reader = csv.DictReader(lines)
    fields = set(reader.fieldnames or [])
    if not fields & {"email", "email_hash"}:
        return ImportReport(errors=["line 1: the header needs an 'email' or 'email_hash' column"])
    rows: list[tuple[str, SuppressionReason, str]] = []
    errors: list[str] = []
    for row in reader:
        line = reader.line_num
        value = (row.get("email") or row.get("email_hash") or "").strip()
        try:
            email_hash = hash_for(value)
        except InvalidAddress as exc:
            errors.append(f"line {line}: {value[:80]!r}: {exc}")
            continue
        try:
            reason = SuppressionReason((row.get("reason") or "manual").strip().lower())
        except ValueError:
            errors.append(f"line {line}: unknown reason {row.get('reason')!r}")
            continue
        rows.append((email_hash, reason, (row.get("note") or "").strip()))
    if errors:
        return ImportReport(errors=errors)
    report = ImportReport()
    existing = suppressed_hashes(session, (h for h, _, _ in rows))
    for email_hash, reason, note in rows:
        if email_hash in existing:
            report.unchanged += 1
        else:
            existing.add(email_hash)
            report.added += 1
        suppress(session, email_hash, reason, source, note)
    return report
