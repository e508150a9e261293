"""Bringing an opted-in list over from another tool (``newsletter subscribers import``).

A row with consent evidence (when and where the person consented) becomes an active
subscriber, and the evidence goes into the consent ledger as an ``imported`` event at the
original time, with the tool's name and the file's SHA-256. A row without evidence gets the
ordinary double opt-in: a pending subscriber and a confirmation email (same outbox, same
per-address cap as the signup form). Suppressed addresses, subscribers who left, and
subscribers already active are never touched, so a second run of the same file changes nothing.

Memory stays flat however long the file: rows are streamed, the session lets go of what it
loaded every CHUNK rows, an address seen earlier in the file is found in a temporary table
(not a set in memory), and the confirmations' outbox ids wait for the commit as 8-byte
integers in one array with one callback, not one closure per row.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.core.db import on_commit
from newsletter.customers.records import BadRecord, parse_datetime
from newsletter.mail.addresses import InvalidAddress, normalize_address
from newsletter.models import (
    ConsentAction,
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
#: Rows after which the session lets go of the objects it loaded (bounded memory).
CHUNK = 500
MAX_ERRORS = 1000
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,49}")


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


@dataclass(frozen=True)
class _Row:
    line: int
    email: str
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
        raise ValueError("--source: 1 to 50 letters, digits, spaces, '.', '_' or '-'")
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
    dispatch,
    default_topics: Sequence[str] = (),
) -> SubscriberImportReport:
    """Import an opted-in list streamed line by line; flushes, the caller commits.

    Header: ``email`` and any of ``first_name``, ``topics`` (slugs separated by spaces,
    ``;`` or ``,``), ``consented_at`` (ISO 8601), ``consent_source``, ``consent_ip``,
    ``consent_wording``. ``dispatch(outbox_id)`` runs after the commit for each confirmation.
    The session lets go of loaded objects every CHUNK rows.
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
    seen = _SeenAddresses(session)
    confirmations = array("q")
    on_commit(session, lambda: [dispatch(outbox_id) for outbox_id in confirmations])
    now = clock.now()
    for count, raw in enumerate(reader, 1):
        if None in raw:
            report.add_error(reader.line_num, "more cells than the header has columns")
            continue
        try:
            row = _parse_row(raw, reader.line_num, known_topics, default_topics, now)
        except BadRecord as exc:
            report.add_error(reader.line_num, str(exc))
            continue
        if not seen.first_time(address_hash(row.email)):
            report.skipped["repeated in the file"] += 1
            continue
        _import_row(
            session,
            conn,
            settings,
            row,
            report,
            source=source,
            file_sha256=file_sha256,
            now=now,
            confirmations=confirmations,
        )
        if count % CHUNK == 0:
            session.flush()
            session.expunge_all()
    session.flush()
    seen.close()
    return report


class _SeenAddresses:
    """The address hashes met so far in this file, in a temporary table of this transaction."""

    def __init__(self, session: Session):
        self.session = session
        self.postgresql = session.get_bind().dialect.name == "postgresql"
        if self.postgresql:  # dropped with the transaction, whatever way it ends
            session.execute(
                text("CREATE TEMP TABLE import_seen (email_hash VARCHAR(64) PRIMARY KEY) ON COMMIT DROP")
            )
        else:  # SQLite keeps a temporary table for the connection: start from none, drop it in close()
            session.execute(text("DROP TABLE IF EXISTS temp.import_seen"))
            session.execute(text("CREATE TEMP TABLE import_seen (email_hash VARCHAR(64) PRIMARY KEY)"))

    def first_time(self, email_hash: str) -> bool:
        return (
            self.session.execute(
                text("INSERT INTO import_seen (email_hash) VALUES (:h) ON CONFLICT DO NOTHING"),
                {"h": email_hash},
            ).rowcount
            == 1
        )

    def close(self) -> None:
        if not self.postgresql:
            self.session.execute(text("DROP TABLE temp.import_seen"))


def _import_row(
    session: Session,
    conn: redis.Redis,
    settings: Settings,
    row: _Row,
    report: SubscriberImportReport,
    *,
    source: str,
    file_sha256: str,
    now: datetime,
    confirmations: array,
) -> None:
    email_hash = address_hash(row.email)
    if suppression.find(session, email_hash) is not None:
        report.skipped["suppressed"] += 1
        return
    subscriber = signup.find_subscriber(session, row.email)
    if subscriber is not None and subscriber.status != SubscriberStatus.PENDING:
        # Active people are left alone; people who left (or were erased) come back only themselves.
        report.skipped[f"already {subscriber.status.value}"] += 1
        return
    request = RequestInfo(ip=None, user_agent=None, source=f"import:{source}")
    if row.consented_at is None:
        if subscriber is not None:
            report.skipped["already pending (confirmation requested before)"] += 1
            return
        outcome = signup.request_signup(
            session,
            conn,
            settings,
            email=row.email,
            first_name=row.first_name,
            topic_slugs=row.topics,
            wording=None,
            request=request,
            dispatch=None,  # all of them after the commit: see import_subscribers
        )
        if outcome.outbox_id is not None:
            confirmations.append(outcome.outbox_id)
        if outcome.email_kind is None:
            report.confirmation_capped += 1
        else:
            report.confirmation_sent += 1
        return
    _activate_with_evidence(
        session, subscriber, row, request, source=source, file_sha256=file_sha256, now=now
    )
    report.imported += 1


def _activate_with_evidence(
    session: Session,
    subscriber: Subscriber | None,
    row: _Row,
    request: RequestInfo,
    *,
    source: str,
    file_sha256: str,
    now: datetime,
) -> None:
    topic_ids = {slug: info.id for slug, info in signup.topics_by_slug(session).items()}
    if subscriber is None:
        subscriber = Subscriber(
            email=row.email,
            email_hash=address_hash(row.email),
            first_name=row.first_name,
            created_at=now,
        )
        session.add(subscriber)
    elif row.first_name:
        subscriber.first_name = row.first_name
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = row.consented_at
    current = {s.topic_id: s for s in subscriber.subscriptions}
    for slug in row.topics:
        existing = current.get(topic_ids[slug])
        if existing is None:
            subscriber.subscriptions.append(
                Subscription(topic_id=topic_ids[slug], status=SubscriptionStatus.ACTIVE)
            )
        else:
            existing.status = SubscriptionStatus.ACTIVE
    session.flush()
    event = record_event(
        session,
        subscriber.id,
        ConsentAction.IMPORTED,
        RequestInfo(ip=row.consent_ip, user_agent=None, source=request.source),
        topics=row.topics,
        wording=Wording(f"import:{source}", row.consent_wording) if row.consent_wording else None,
        details={
            "tool": source,
            "consent_source": row.consent_source,
            "imported_at": now.isoformat() + "Z",
            "file_sha256": file_sha256,
            "line": row.line,
        },
    )
    # The evidence is dated when the person consented, not when we learned of it.
    event.occurred_at = row.consented_at
