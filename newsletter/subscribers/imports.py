"""Bringing an opted-in list over from another tool (``newsletter subscribers import``).

A row with consent evidence (when and where the person consented) becomes an active
subscriber, and the evidence goes into the consent ledger as an ``imported`` event at the
original time, with the tool's name and the file's SHA-256. A row without evidence gets the
ordinary double opt-in: a pending subscriber and a confirmation email (same outbox, same
per-address cap as the signup form). Suppressed addresses, subscribers who left, and
subscribers already active are never touched, so a second run of the same file changes nothing.

Rows are checked one by one (a bad row is reported with its line), then written CHUNK at a
time, set-based: on PostgreSQL the chunk is ``COPY``'d into a temporary table and every lookup
and write is one statement on it; on SQLite the lookups are IN lists and the writes
``executemany`` batches. The whole file is one transaction, as before. The choice per row is
the same Python on both (``_choose``); an address a signup added between a chunk's lookup and
its INSERT goes through the one-row path (``_import_row``), which finds it.

Memory stays flat however long the file: rows are streamed, a chunk is let go once written
(with the session's loaded objects), an address seen earlier in the file is found in a
temporary table (not a set in memory), and the confirmations' outbox ids wait for the commit
as 8-byte integers in one array with one callback, not one closure per row.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import logging
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import redis
from sqlalchemy import bindparam, column, func, select, table, text, update
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.core.db import copy_rows, dialect_insert, insert_rows, on_commit, plan_each_statement
from newsletter.customers.records import BadRecord, parse_datetime
from newsletter.mail.addresses import InvalidAddress, mailbox_hash, normalize_address
from newsletter.models import (
    ConsentAction,
    ConsentEvent,
    Frequency,
    OutboxEmail,
    OutboxKind,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
)
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import signup, suppression
from newsletter.subscribers.consent import RequestInfo, Wording, record_event
from newsletter.subscribers.names import name_problem

REQUIRED = {"email"}
OPTIONAL = {"first_name", "topics", "consented_at", "consent_source", "consent_ip", "consent_wording"}
#: Valid rows written together (a few statements per chunk, whatever its size).
CHUNK = 1000
#: Confirmations handed to ``dispatch_many`` at a time.
DISPATCH_BATCH = 1000
MAX_ERRORS = 1000
#: the ledger stores ``import:NAME`` as the wording version, a 50-character column
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,42}")

log = logging.getLogger(__name__)


@dataclass
class SubscriberImportReport:
    #: active, with imported consent evidence
    imported: int = 0
    #: pending, confirmation email queued
    confirmation_sent: int = 0
    #: pending, but the address's daily confirmation cap was reached: no email now
    confirmation_capped: int = 0
    #: reason -> rows
    skipped: Counter[str] = field(default_factory=Counter)
    bad: int = 0
    #: (line, reason), at most MAX_ERRORS of them
    errors: list[tuple[int, str]] = field(default_factory=list)

    def add_error(self, line: int, reason: str) -> None:
        self.bad += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((line, reason))


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    email: str
    email_hash: str
    first_name: str | None
    topics: list[str]
    consented_at: datetime | None
    consent_source: str | None
    consent_ip: str | None
    consent_wording: str | None


def check_source_name(name: str) -> str:
    """The importing tool's name, as the ledger will show it (``import:NAME``)."""
    name = name.strip()
    if not SOURCE_NAME.fullmatch(name):
        raise ValueError("--source: 1 to 43 letters, digits, spaces, '.', '_' or '-'")
    return name


def _parse_row(
    row: dict[str, str], line: int, known_topics: set[str], default_topics: Sequence[str], now: datetime
) -> _Row:
    cell = {k: (v or "").strip() for k, v in row.items()}
    try:
        email = normalize_address(cell.get("email", ""))
    except InvalidAddress as exc:
        raise BadRecord(f"email {cell.get('email', '')[:80]!r}: {exc}") from None
    first_name = cell.get("first_name") or None
    if first_name and (problem := name_problem(first_name)):
        raise BadRecord(f"first_name: {problem}")
    topics = [t for t in re.split(r"[\s,;|]+", cell.get("topics", "")) if t] or list(default_topics)
    unknown = sorted(set(topics) - known_topics)
    if unknown:
        raise BadRecord(f"unknown topics {', '.join(unknown)} (known: {', '.join(sorted(known_topics))})")
    if not topics:
        raise BadRecord("no topics: fill the topics column or pass --topics")
    consented_at = parse_datetime(cell["consented_at"]) if cell.get("consented_at") else None
    if consented_at and consented_at > now:
        raise BadRecord("consented_at is in the future")
    consent_source = cell.get("consent_source") or None
    if bool(consented_at) != bool(consent_source):
        raise BadRecord("consent evidence needs both consented_at and consent_source (or neither)")
    if consent_source and len(consent_source) > 200:
        raise BadRecord("consent_source: at most 200 characters")
    consent_ip = cell.get("consent_ip") or None
    if consent_ip:
        try:
            consent_ip = str(ipaddress.ip_address(consent_ip))
        except ValueError:
            raise BadRecord(f"consent_ip {consent_ip[:45]!r} is not an IP address") from None
    consent_wording = cell.get("consent_wording") or None
    if (consent_ip or consent_wording) and not consented_at:
        raise BadRecord("consent_ip and consent_wording belong to consent evidence (consented_at)")
    return _Row(
        line,
        email,
        address_hash(email),
        first_name,
        sorted(set(topics)),
        consented_at,
        consent_source,
        consent_ip,
        consent_wording,
    )


def import_subscribers(
    session: Session,
    conn: redis.Redis,
    settings: Settings,
    lines: Iterable[str],
    *,
    source: str,
    file_sha256: str,
    dispatch: Callable[[int], object] | None = None,
    dispatch_many: Callable[[list[int]], object] | None = None,
    default_topics: Sequence[str] = (),
) -> SubscriberImportReport:
    """Import an opted-in list streamed line by line; flushes, the caller commits.

    Header: ``email`` and any of ``first_name``, ``topics`` (slugs separated by spaces,
    ``;`` or ``,``), ``consented_at`` (ISO 8601), ``consent_source``, ``consent_ip``,
    ``consent_wording``. After the commit, ``dispatch_many(outbox_ids)`` runs for each
    DISPATCH_BATCH of confirmations (one Redis round trip each), or without it
    ``dispatch(outbox_id)`` for each.
    Valid rows are written CHUNK at a time; the session lets go of loaded objects after each.
    """
    source = check_source_name(source)
    report = SubscriberImportReport()
    reader = csv.DictReader(lines)
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    unknown = sorted(set(header) - REQUIRED - OPTIONAL)
    if not REQUIRED <= set(header) or unknown or len(set(header)) != len(header):
        report.add_error(
            1,
            "the header needs an 'email' column, each column once, and only these others: "
            + ", ".join(sorted(OPTIONAL))
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
        )
        return report
    reader.fieldnames = header
    known_topics = set(signup.topics_by_slug(session))
    run = _Run(session, conn, settings, source, file_sha256, clock.now(), report, array("q"))
    on_commit(session, lambda: _dispatch(run.confirmations, dispatch, dispatch_many))
    chunk: list[_Row] = []
    for raw in reader:
        if None in raw:
            report.add_error(reader.line_num, "more cells than the header has columns")
            continue
        try:
            chunk.append(_parse_row(raw, reader.line_num, known_topics, default_topics, run.now))
        except BadRecord as exc:
            report.add_error(reader.line_num, str(exc))
            continue
        if len(chunk) >= CHUNK:
            run.write(chunk)
            chunk = []
    run.write(chunk)
    session.flush()
    run.close()
    return report


@dataclass
class _Run:
    """One import: what its rows' writes carry (source, file, time) and the chunk writer."""

    session: Session
    conn: redis.Redis
    settings: Settings
    source: str
    file_sha256: str
    now: datetime
    report: SubscriberImportReport
    #: the confirmations' outbox ids, dispatched after the commit
    confirmations: array
    postgresql: bool = field(init=False)

    def __post_init__(self) -> None:
        self.postgresql = self.session.get_bind().dialect.name == "postgresql"
        self.request_source = f"import:{self.source}"[:100]
        self.topic_ids = {slug: info.id for slug, info in signup.topics_by_slug(self.session).items()}
        _open_seen(self.session, self.postgresql)
        if self.postgresql:
            plan_each_statement(self.session)  # the tables grow within this one transaction
            self.session.execute(text(_STAGE))

    def close(self) -> None:
        if not self.postgresql:  # PostgreSQL drops its temporary tables with the transaction
            self.session.execute(text("DROP TABLE temp.import_seen"))

    def write(self, chunk: list[_Row]) -> None:
        """Write one chunk of valid rows (in file order), then let go of what the session loaded."""
        if not chunk:
            return
        first: dict[str, _Row] = {}
        for row in chunk:
            if row.email_hash in first:
                self.report.skipped["repeated in the file"] += 1
            else:
                first[row.email_hash] = row
        rows = list(first.values())
        late = _write_pg(self, rows) if self.postgresql else _write_sqlite(self, rows)
        for row in late:  # added by someone else since the chunk's lookup: the one-row path finds it
            _import_row(self, row)
        self.session.flush()
        self.session.expunge_all()

    def details(self, row: _Row) -> dict:
        """The ``imported`` event's details: the tool, the evidence's source, the file and its line."""
        return {
            "tool": self.source,
            "consent_source": row.consent_source,
            "imported_at": self.now.isoformat() + "Z",
            "file_sha256": self.file_sha256,
            "line": row.line,
        }

    def wording(self, row: _Row) -> Wording | None:
        return Wording(f"import:{self.source}", row.consent_wording) if row.consent_wording else None


def _dispatch(outbox_ids: array, dispatch, dispatch_many) -> None:
    if dispatch_many is None:
        for outbox_id in outbox_ids:
            dispatch(outbox_id)
        return
    for start in range(0, len(outbox_ids), DISPATCH_BATCH):
        dispatch_many(outbox_ids[start : start + DISPATCH_BATCH].tolist())


def _open_seen(session: Session, postgresql: bool) -> None:
    """The address hashes met so far in this file: a temporary table of this transaction."""
    if postgresql:  # dropped with the transaction, whatever way it ends
        session.execute(
            text("CREATE TEMP TABLE import_seen (email_hash VARCHAR(64) PRIMARY KEY) ON COMMIT DROP")
        )
    else:  # SQLite keeps a temporary table for the connection: start from none, drop it in close()
        session.execute(text("DROP TABLE IF EXISTS temp.import_seen"))
        session.execute(text("CREATE TEMP TABLE import_seen (email_hash VARCHAR(64) PRIMARY KEY)"))


def _choose(
    run: _Run,
    rows: list[_Row],
    fresh: set[str],
    status: dict[str, str],
    suppressed: set[str],
) -> tuple[list[_Row], list[_Row]]:
    """The rows to activate with their evidence and the rows to ask for a confirmation.

    Every other row is counted in the report with its reason. ``fresh``: addresses not met in
    an earlier chunk; ``status``: the subscribers on file, by address hash.
    """
    evidence, pending = [], []
    for row in rows:
        known = status.get(row.email_hash)
        if row.email_hash not in fresh:
            reason = "repeated in the file"
        elif row.email_hash in suppressed:
            reason = "suppressed"
        elif known is not None and known != SubscriberStatus.PENDING:
            # Active people are left alone; people who left (or were erased) come back only themselves.
            reason = f"already {SubscriberStatus(known).value}"
        elif known is not None and row.consented_at is None:
            reason = "already pending (confirmation requested before)"
        else:
            (pending if row.consented_at is None else evidence).append(row)
            continue
        run.report.skipped[reason] += 1
    return evidence, pending


def _count_confirmations(run: _Run, pending: list[_Row]) -> list[bool]:
    """Which of these new pending rows may be mailed (the per-mailbox daily cap), counted in the report."""
    allowed = signup.mails_allowed(
        run.session, run.conn, run.settings, [mailbox_hash(row.email) for row in pending]
    )
    sent = sum(allowed)
    run.report.confirmation_sent += sent
    run.report.confirmation_capped += len(allowed) - sent
    if sent < len(allowed):
        log.info("import: %d confirmation(s) held back (daily cap per mailbox)", len(allowed) - sent)
    return allowed


_NOT_SENT = json.dumps({"email": "not sent: daily cap for this mailbox"})
_SENT = json.dumps({"email": OutboxKind.CONFIRM.value})


# --- PostgreSQL: the chunk in a temporary table, each lookup and write one statement on it --------

# Created once per import; emptied (TRUNCATE: no dead rows piling up in the long transaction)
# before each chunk's COPY; dropped with the transaction however it ends.
_STAGE = (
    "CREATE TEMPORARY TABLE subscriber_import_chunk (line integer PRIMARY KEY, email varchar(320),"
    " email_hash varchar(64), first_name varchar(100), topics text, consented_at timestamp,"
    " consent_ip varchar(45), wording_hash varchar(64), details text, mailbox_hash varchar(64),"
    " subscriber_id integer, known boolean NOT NULL DEFAULT false) ON COMMIT DROP"
)
_STAGE_COLUMNS = (
    "line",
    "email",
    "email_hash",
    "first_name",
    "topics",
    "consented_at",
    "consent_ip",
    "wording_hash",
    "details",
    "mailbox_hash",
)
# Per address of the chunk: met for the first time in the file (noted as met), its subscriber's
# status, and whether it is suppressed.
_LOOKUP = text(
    "WITH fresh AS (INSERT INTO import_seen (email_hash) SELECT email_hash FROM subscriber_import_chunk"
    " ON CONFLICT DO NOTHING RETURNING email_hash)"
    " SELECT c.email_hash, f.email_hash IS NOT NULL, s.status,"
    " EXISTS (SELECT 1 FROM suppressions x WHERE x.email_hash = c.email_hash)"
    " FROM subscriber_import_chunk c LEFT JOIN fresh f ON f.email_hash = c.email_hash"
    " LEFT JOIN subscribers s ON s.email_hash = c.email_hash"
)
_KEEP = text("DELETE FROM subscriber_import_chunk WHERE line <> ALL(CAST(:lines AS integer[]))")
_KNOWN = text(
    "UPDATE subscriber_import_chunk c SET subscriber_id = s.id, known = true"
    " FROM subscribers s WHERE s.email_hash = c.email_hash"
)
_ACTIVATE_KNOWN = text(
    "UPDATE subscribers s SET status = :active, confirmed_at = c.consented_at,"
    " first_name = COALESCE(c.first_name, s.first_name)"
    " FROM subscriber_import_chunk c WHERE c.known AND s.id = c.subscriber_id"
)
# Rows with evidence are active and confirmed when they consented; the others pending.
_NEW_SUBSCRIBERS = text(
    "WITH new AS (INSERT INTO subscribers"
    " (email, email_hash, first_name, status, created_at, confirmed_at, frequency, time_zone)"
    " SELECT email, email_hash, first_name,"
    " CASE WHEN consented_at IS NULL THEN :pending ELSE :active END,"
    " CASE WHEN consented_at IS NULL THEN :now ELSE :started END, consented_at, :frequency, 'UTC'"
    " FROM subscriber_import_chunk WHERE NOT known ORDER BY line"
    " ON CONFLICT (email_hash) DO NOTHING RETURNING id, email_hash)"
    " UPDATE subscriber_import_chunk c SET subscriber_id = new.id"
    " FROM new WHERE new.email_hash = c.email_hash"
)
_LATE = text("DELETE FROM subscriber_import_chunk WHERE subscriber_id IS NULL RETURNING line")
# A pending subscriber's topic the evidence covers turns active; every other one is added.
_TOPICS = text(
    "INSERT INTO subscriptions (subscriber_id, topic_id, status, updated_at)"
    " SELECT c.subscriber_id, t.id, CASE WHEN c.consented_at IS NULL THEN :pending ELSE :active END, :now"
    " FROM subscriber_import_chunk c CROSS JOIN json_array_elements_text(CAST(c.topics AS json)) AS slug"
    " JOIN topics t ON t.slug = slug.value ORDER BY c.line, t.id"
    " ON CONFLICT (subscriber_id, topic_id)"
    " DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at"
    " WHERE subscriptions.status <> EXCLUDED.status"
)
_IMPORTED_EVENTS = text(
    "INSERT INTO consent_events (subscriber_id, action, topics, occurred_at, ip, user_agent, source,"
    " wording_version, wording_hash, details)"
    " SELECT subscriber_id, :action, CAST(topics AS json), consented_at, consent_ip, NULL, :source,"
    " CASE WHEN wording_hash IS NULL THEN NULL ELSE :wording_version END, wording_hash, CAST(details AS json)"
    " FROM subscriber_import_chunk WHERE consented_at IS NOT NULL ORDER BY line"
)
# The signup requests' events, then the confirmations' outbox rows naming them (not the capped).
_REQUESTS_AND_OUTBOX = text(
    "WITH e AS (INSERT INTO consent_events (subscriber_id, action, topics, occurred_at, ip, user_agent,"
    " source, wording_version, wording_hash, details)"
    " SELECT subscriber_id, :action, CAST(topics AS json), :now, NULL, NULL, :source, NULL, NULL,"
    " CAST(CASE WHEN line = ANY(CAST(:capped AS integer[])) THEN :not_sent ELSE :sent END AS json)"
    " FROM subscriber_import_chunk WHERE consented_at IS NULL ORDER BY line RETURNING id, subscriber_id)"
    " INSERT INTO outbox_emails (kind, subscriber_id, created_at, attempts, request_event_id, mailbox_hash)"
    " SELECT :kind, e.subscriber_id, :now, 0, e.id, c.mailbox_hash"
    " FROM e JOIN subscriber_import_chunk c ON c.subscriber_id = e.subscriber_id"
    " WHERE c.line <> ALL(CAST(:capped AS integer[])) ORDER BY c.line RETURNING id"
)


def _write_pg(run: _Run, rows: list[_Row]) -> list[_Row]:
    """PostgreSQL: one chunk in about ten statements; returns the rows to take one by one."""
    session = run.session
    session.execute(text("TRUNCATE subscriber_import_chunk"))
    copy_rows(
        session,
        "subscriber_import_chunk",
        _STAGE_COLUMNS,
        (
            (
                row.line,
                row.email,
                row.email_hash,
                row.first_name,
                json.dumps(row.topics),
                row.consented_at,
                row.consent_ip,
                wording.sha256 if (wording := run.wording(row)) else None,
                json.dumps(run.details(row)) if row.consented_at else None,
                None if row.consented_at else mailbox_hash(row.email),
            )
            for row in rows
        ),
    )
    fresh, status, suppressed = set(), {}, set()
    for email_hash, first_time, known, blocked in session.execute(_LOOKUP):
        if first_time:
            fresh.add(email_hash)
        if known is not None:
            status[email_hash] = known
        if blocked:
            suppressed.add(email_hash)
    evidence, pending = _choose(run, rows, fresh, status, suppressed)
    if not evidence and not pending:
        return []
    if len(evidence) + len(pending) < len(rows):
        session.execute(_KEEP, {"lines": [row.line for row in (*evidence, *pending)]})
    now = clock.now()
    if any(row.email_hash in status for row in evidence):
        session.execute(_KNOWN)
        session.execute(_ACTIVATE_KNOWN, {"active": SubscriberStatus.ACTIVE.value})
    new = sum(1 for row in (*evidence, *pending) if row.email_hash not in status)
    late: list[_Row] = []
    if new:
        inserted = session.execute(
            _NEW_SUBSCRIBERS,
            {
                "pending": SubscriberStatus.PENDING.value,
                "active": SubscriberStatus.ACTIVE.value,
                "now": now,
                "started": run.now,
                "frequency": Frequency.ANY.value,
            },
        ).rowcount
        if inserted < new:
            lines = set(session.scalars(_LATE))
            late = [row for row in rows if row.line in lines]
            evidence = [row for row in evidence if row.line not in lines]
            pending = [row for row in pending if row.line not in lines]
    session.execute(
        _TOPICS,
        {"pending": SubscriptionStatus.PENDING.value, "active": SubscriptionStatus.ACTIVE.value, "now": now},
    )
    if evidence:
        session.execute(
            _IMPORTED_EVENTS,
            {
                "action": ConsentAction.IMPORTED.value,
                "source": run.request_source,
                "wording_version": f"import:{run.source}",
            },
        )
        run.report.imported += len(evidence)
    if pending:
        allowed = _count_confirmations(run, pending)
        outbox_ids = session.scalars(
            _REQUESTS_AND_OUTBOX,
            {
                "action": ConsentAction.SIGNUP_REQUESTED.value,
                "now": now,
                "source": run.request_source,
                "capped": [row.line for row, ok in zip(pending, allowed, strict=True) if not ok],
                "not_sent": _NOT_SENT,
                "sent": _SENT,
                "kind": OutboxKind.CONFIRM.value,
            },
        )
        run.confirmations.extend(sorted(outbox_ids))
    return late


# --- SQLite: IN-list lookups, executemany writes ------------------------------------------------

_SEEN = table("import_seen", column("email_hash"))
_SUBSCRIBERS = Subscriber.__table__
_ACTIVATE = (
    update(_SUBSCRIBERS)
    .where(_SUBSCRIBERS.c.id == bindparam("b_id"))
    .values(
        status=SubscriberStatus.ACTIVE,
        confirmed_at=bindparam("b_confirmed_at"),
        first_name=func.coalesce(bindparam("b_first_name"), _SUBSCRIBERS.c.first_name),
    )
)


def _write_sqlite(run: _Run, rows: list[_Row]) -> list[_Row]:
    """SQLite: one chunk in a handful of batched statements; returns the rows to take one by one."""
    session = run.session
    hashes = [row.email_hash for row in rows]
    fresh = set(
        session.scalars(
            dialect_insert(session, _SEEN)
            .values([{"email_hash": h} for h in hashes])
            .on_conflict_do_nothing()
            .returning(_SEEN.c.email_hash)
        )
    )
    ids, status = {}, {}
    for sid, email_hash, known in session.execute(
        select(Subscriber.id, Subscriber.email_hash, Subscriber.status).where(
            Subscriber.email_hash.in_(hashes)
        )
    ):
        ids[email_hash], status[email_hash] = sid, known
    suppressed = suppression.suppressed_hashes(session, hashes)
    evidence, pending = _choose(run, rows, fresh, status, suppressed)
    now = clock.now()
    new = sorted((row for row in (*evidence, *pending) if row.email_hash not in status), key=lambda r: r.line)
    late: list[_Row] = []
    if new:
        statement = (
            dialect_insert(session, _SUBSCRIBERS)
            .on_conflict_do_nothing(index_elements=["email_hash"])
            .returning(_SUBSCRIBERS.c.id, _SUBSCRIBERS.c.email_hash)
        )
        values = [
            {
                "email": row.email,
                "email_hash": row.email_hash,
                "first_name": row.first_name,
                "status": SubscriberStatus.PENDING if row.consented_at is None else SubscriberStatus.ACTIVE,
                "created_at": now if row.consented_at is None else run.now,
                "confirmed_at": row.consented_at,
                "frequency": Frequency.ANY,
                "time_zone": "UTC",
            }
            for row in new
        ]
        ids.update({email_hash: sid for sid, email_hash in session.execute(statement, values)})
        late = [row for row in new if row.email_hash not in ids]
        evidence = [row for row in evidence if row.email_hash in ids]
        pending = [row for row in pending if row.email_hash in ids]
    known = [row for row in evidence if row.email_hash in status]
    if known:
        session.execute(
            _ACTIVATE,
            [
                {"b_id": ids[r.email_hash], "b_confirmed_at": r.consented_at, "b_first_name": r.first_name}
                for r in known
            ],
        )
    _write_topics_sqlite(session, run.topic_ids, ids, evidence, pending, now)
    insert_rows(
        session,
        ConsentEvent,
        [
            {
                "subscriber_id": ids[row.email_hash],
                "action": ConsentAction.IMPORTED,
                "topics": row.topics,
                "occurred_at": row.consented_at,  # when the person consented, not when we learned of it
                "ip": row.consent_ip and row.consent_ip[:45],
                "user_agent": None,
                "source": run.request_source,
                "wording_version": wording.version if (wording := run.wording(row)) else None,
                "wording_hash": wording.sha256 if wording else None,
                "details": run.details(row),
            }
            for row in evidence
        ],
    )
    run.report.imported += len(evidence)
    if pending:
        allowed = _count_confirmations(run, pending)
        events = dict(
            (sid, event_id)
            for event_id, sid in insert_rows(
                session,
                ConsentEvent,
                [
                    {
                        "subscriber_id": ids[row.email_hash],
                        "action": ConsentAction.SIGNUP_REQUESTED,
                        "topics": row.topics,
                        "occurred_at": now,
                        "ip": None,
                        "user_agent": None,
                        "source": run.request_source,
                        "wording_version": None,
                        "wording_hash": None,
                        "details": {
                            "email": OutboxKind.CONFIRM.value
                            if ok
                            else "not sent: daily cap for this mailbox"
                        },
                    }
                    for row, ok in zip(pending, allowed, strict=True)
                ],
                returning=("id", "subscriber_id"),
            )
        )
        mailed = [row for row, ok in zip(pending, allowed, strict=True) if ok]
        outbox_ids = insert_rows(
            session,
            OutboxEmail,
            [
                {
                    "kind": OutboxKind.CONFIRM,
                    "subscriber_id": ids[row.email_hash],
                    "created_at": now,
                    "attempts": 0,
                    "request_event_id": events[ids[row.email_hash]],
                    "mailbox_hash": mailbox_hash(row.email),
                }
                for row in mailed
            ],
            returning=("id",),
        )
        run.confirmations.extend(sorted(oid for (oid,) in outbox_ids))
    return late


def _write_topics_sqlite(
    session: Session,
    topic_ids: dict[str, int],
    ids: dict[str, int],
    evidence: list[_Row],
    pending: list[_Row],
    now: datetime,
) -> None:
    """The rows' topics: active with evidence (a known subscriber's pending one turns active), or pending."""
    rows = [
        {
            "subscriber_id": ids[row.email_hash],
            "topic_id": topic_ids[slug],
            "status": status,
            "updated_at": now,
        }
        for status, chosen in ((SubscriptionStatus.ACTIVE, evidence), (SubscriptionStatus.PENDING, pending))
        for row in chosen
        for slug in row.topics
    ]
    if not rows:
        return
    statement = dialect_insert(session, Subscription.__table__)
    statement = statement.on_conflict_do_update(
        index_elements=["subscriber_id", "topic_id"],
        set_={"status": statement.excluded.status, "updated_at": statement.excluded.updated_at},
        where=Subscription.__table__.c.status != statement.excluded.status,
    )
    session.execute(statement, rows)


# --- one row at a time: an address added by someone else since its chunk's lookup --------------


def _import_row(run: _Run, row: _Row) -> None:
    """One row through the signup's own code (the rare address that appeared mid-chunk)."""
    session, report = run.session, run.report
    if suppression.find(session, row.email_hash) is not None:
        report.skipped["suppressed"] += 1
        return
    subscriber = signup.find_subscriber(session, row.email)
    if subscriber is not None and subscriber.status != SubscriberStatus.PENDING:
        report.skipped[f"already {subscriber.status.value}"] += 1
        return
    request = RequestInfo(ip=None, user_agent=None, source=f"import:{run.source}")
    if row.consented_at is None:
        if subscriber is not None:
            report.skipped["already pending (confirmation requested before)"] += 1
            return
        outcome = signup.request_signup(
            session,
            run.conn,
            run.settings,
            email=row.email,
            first_name=row.first_name,
            topic_slugs=row.topics,
            wording=None,
            request=request,
            dispatch=None,  # all of them after the commit: see import_subscribers
        )
        if outcome.outbox_id is not None:
            run.confirmations.append(outcome.outbox_id)
        if outcome.email_kind is None:
            report.confirmation_capped += 1
        else:
            report.confirmation_sent += 1
        return
    _activate_with_evidence(run, subscriber, row)
    report.imported += 1


def _activate_with_evidence(run: _Run, subscriber: Subscriber | None, row: _Row) -> None:
    session = run.session
    if subscriber is None:
        subscriber = Subscriber(
            email=row.email, email_hash=row.email_hash, first_name=row.first_name, created_at=run.now
        )
        session.add(subscriber)
    elif row.first_name:
        subscriber.first_name = row.first_name
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = row.consented_at
    current = {s.topic_id: s for s in subscriber.subscriptions}
    for slug in row.topics:
        existing = current.get(run.topic_ids[slug])
        if existing is None:
            subscriber.subscriptions.append(
                Subscription(topic_id=run.topic_ids[slug], status=SubscriptionStatus.ACTIVE)
            )
        else:
            existing.status = SubscriptionStatus.ACTIVE
    session.flush()
    event = record_event(
        session,
        subscriber.id,
        ConsentAction.IMPORTED,
        RequestInfo(ip=row.consent_ip, user_agent=None, source=run.request_source),
        topics=row.topics,
        wording=run.wording(row),
        details=run.details(row),
    )
    # The evidence is dated when the person consented, not when we learned of it.
    event.occurred_at = row.consented_at
