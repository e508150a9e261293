"""Trading lists with a partner: export the people who consented to it, import (and invite)
the people who consented to us, and swap suppression lists. Plain functions; callers commit.
"""

from __future__ import annotations

import hmac
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from sqlalchemy import exists, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.core.db import copy_rows, dialect_insert, insert_rows, on_commit, plan_each_statement
from newsletter.mail.addresses import InvalidAddress, normalize_address
from newsletter.models import (
    ConsentAction,
    ConsentEvent,
    Frequency,
    OutboxEmail,
    OutboxKind,
    Partner,
    PartnerImport,
    PartnerInvitation,
    PartnerShare,
    PartnerSuppression,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.models.partners import PartnerExchange
from newsletter.models.subscribers import address_hash
from newsletter.partners import checkpoint, files, withdrawals
from newsletter.partners.checkpoint import ImportInterrupted
from newsletter.partners.files import FileRefused
from newsletter.partners.registry import require_store_id
from newsletter.partners.signing import hash_mac
from newsletter.subscribers.names import name_problem
from newsletter.subscribers.signup import topics_by_slug

#: nobody gets a second invitation (from any partner) within this time
REINVITE_AFTER = timedelta(days=30)
#: the topics an invited person is subscribed to when they confirm
DEFAULT_TOPICS = ("newsletter",)
BATCH = 1000
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FORMULA_START = tuple("=+-@\t\r")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: a lower-case ASCII address: email-validator's normal form of it, once valid, is itself
#: (unless a label is punycode, "xn--", which it turns into Unicode)
_PLAIN_ADDRESS = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9.-]+")


def _text_problem(value: Any, limit: int) -> str | None:
    """Why a text field is unusable (None if it is fine): type, length, line breaks, formulas."""
    if not isinstance(value, str):
        return "must be text"
    if len(value) > limit:
        return f"longer than {limit} characters ({len(value)})"
    if _CONTROL.search(value):
        return "contains a line break or control character"
    if value.startswith(_FORMULA_START):
        return "starts like a spreadsheet formula (=, +, -, @)"
    return None


def _name_unusable(value: str) -> bool:
    """A stored name the partner's importer would refuse (one saved before names were checked)."""
    return _text_problem(value, 100) is not None or name_problem(value) is not None


# --- export -----------------------------------------------------------------------------------


def export_contacts(
    session: Session,
    settings: Settings,
    partner: Partner,
    *,
    channel: str = "file",
    previous: PartnerExchange | None = None,
    exchange: PartnerExchange | None = None,
) -> Iterator[bytes]:
    """The signed file of everyone who may be shared with ``partner``, streamed in chunks.

    Only confirmed subscribers whose current grant names this partner, who are not on our
    suppression list and whom the partner has not told us opted out there; then a withdrawal
    record (``{"withdrawn": sha256}``) per person the partner received who withdrew since. With
    ``previous`` only shares granted, changed or withdrawn since its start travel.

    The export is its own ``partner_exchanges`` row (``exchange``, when the caller made it: a push
    keeps it running until the partner answers) (the header names it and ``previous``).
    Commits as it goes: each page of people gets its ``partner_disclosed`` ledger events in a
    transaction committed *before* any of its bytes are handed out, so a stream cut short
    (crash, closed connection) over-reports by at most one page and never under-reports; the
    exchange is marked done when the trailer has been produced, failed if the stream stops.
    """
    store_id = require_store_id(settings)
    partner_id, partner_name, secret = partner.id, partner.name, partner.secret
    previous_id = previous.id if previous is not None else None
    since = previous.started_at if previous is not None else None
    run = exchange or PartnerExchange(
        partner_id=partner_id,
        direction="export",
        channel=channel,
        status="running",
        started_at=clock.now(),
        previous_id=previous_id,
        records=0,
        invited=0,
        skipped={},
    )
    session.add(run)
    session.commit()
    exchange_id = run.id
    counts = {"records": 0, "withdrawn": 0}
    header = {"exchange": exchange_id} | ({"previous": previous_id} if previous_id is not None else {})

    def rows() -> Iterator[dict]:
        for page in _disclosable_pages(session, partner_id, since):
            _record_disclosures(session, partner_id, partner_name, exchange_id, previous_id, channel, page)
            session.commit()  # on record before a byte of this page leaves
            counts["records"] += len(page)
            for _, email, first_name, granted_at, version, wording_hash, source in page:
                yield {
                    "email": email,
                    # a name the partner would refuse (formula-like, too long) is left out, not the person
                    "first_name": first_name if first_name and not _name_unusable(first_name) else None,
                    "consent": {
                        "to": partner_id,
                        "to_name": partner_name,
                        "given_at": files.iso(granted_at),
                        "wording_version": version,
                        "wording_sha256": wording_hash,
                    },
                    "source": f"{store_id}:{source or 'unknown'}",
                }
        for email_hash in withdrawals.to_tell(session, partner_id, since):
            counts["withdrawn"] += 1
            yield {"withdrawn": email_hash}

    def stream() -> Iterator[bytes]:
        try:
            yield from files.write_signed(files.CONTACTS, store_id, partner_id, secret, rows(), header=header)
        except BaseException as exc:  # GeneratorExit too: the consumer stopped reading
            session.rollback()
            why = "the stream was not read to the end" if isinstance(exc, GeneratorExit) else str(exc)
            _finish_export(session, exchange_id, counts, "failed", f"{why}"[:500])
            raise
        # a row the caller made (a push) stays running until the partner has answered
        _finish_export(session, exchange_id, counts, "running" if exchange is not None else "done", None)

    return stream()


def _disclosable_pages(session: Session, partner_id: str, since: datetime | None) -> Iterator[list[tuple]]:
    """The people to export, a page of BATCH at a time by id (keyset: no cursor held across commits)."""
    last = 0
    while True:
        statement = (
            select(
                Subscriber.id,
                Subscriber.email,
                Subscriber.first_name,
                PartnerShare.granted_at,
                PartnerShare.wording_version,
                PartnerShare.wording_hash,
                PartnerShare.source,
            )
            .join(PartnerShare, PartnerShare.subscriber_id == Subscriber.id)
            .where(
                Subscriber.id > last,
                PartnerShare.partner_id == partner_id,
                PartnerShare.granted.is_(True),
                PartnerShare.granted_at.is_not(None),
                PartnerShare.wording_hash.is_not(None),
                Subscriber.status == SubscriberStatus.ACTIVE,
                ~exists().where(Suppression.email_hash == Subscriber.email_hash),
                ~exists().where(
                    PartnerSuppression.partner_id == partner_id,
                    PartnerSuppression.email_hash == Subscriber.email_hash,
                ),
            )
            .order_by(Subscriber.id)
            .limit(BATCH)
        )
        if since is not None:
            statement = statement.where(PartnerShare.updated_at >= since)
        page = [tuple(row) for row in session.execute(statement)]
        if not page:
            return
        yield page
        last = page[-1][0]


def _record_disclosures(
    session: Session,
    partner_id: str,
    partner_name: str,
    exchange_id: int,
    previous_id: int | None,
    channel: str,
    page: list[tuple],
) -> None:
    """One ``partner_disclosed`` ledger event per person of the page, and the share's ``disclosed_at``."""
    now = clock.now()
    insert_rows(
        session,
        ConsentEvent,
        [
            {
                "subscriber_id": sid,
                "action": ConsentAction.PARTNER_DISCLOSED,
                "topics": [],
                "occurred_at": now,
                "ip": None,
                "user_agent": None,
                "source": f"partner-export:{channel}"[:100],
                "wording_version": version,
                "wording_hash": wording_hash,
                "details": {
                    "partner": partner_id,
                    "partner_name": partner_name,
                    "exchange_id": exchange_id,
                    "previous_exchange_id": previous_id,
                    "channel": channel,
                },
            }
            for sid, _, _, _, version, wording_hash, _ in page
        ],
    )
    session.execute(
        update(PartnerShare)
        .where(PartnerShare.partner_id == partner_id, PartnerShare.subscriber_id.in_([r[0] for r in page]))
        # updated_at kept: a disclosure is no change of the share (the next delta must not resend it)
        .values(disclosed_at=now, updated_at=PartnerShare.updated_at)
    )


def _finish_export(session: Session, exchange_id: int, counts: dict, status: str, error: str | None) -> None:
    session.execute(
        update(PartnerExchange)
        .where(PartnerExchange.id == exchange_id)
        .values(
            status=status,
            finished_at=None if status == "running" else clock.now(),
            records=counts["records"],
            skipped={"withdrawn": counts["withdrawn"]} if counts["withdrawn"] else {},
            error=error,
        )
    )
    session.commit()


def previous_export(session: Session, partner_id: str, previous_id: int | None) -> PartnerExchange | None:
    """The earlier export to this partner that a request names (None: unknown, so everything travels)."""
    if previous_id is None:
        return None
    row = session.get(PartnerExchange, previous_id)
    if row is None or row.partner_id != partner_id or row.direction != "export" or row.status != "done":
        return None
    return row


def export_suppressions(session: Session, settings: Settings, partner: Partner) -> Iterator[bytes]:
    """Our whole suppression list as hashes: SHA-256 of the address and the pair's keyed HMAC of it."""
    store_id = require_store_id(settings)
    hashes = session.scalars(
        select(Suppression.email_hash).order_by(Suppression.id).execution_options(yield_per=BATCH)
    )
    rows = ({"sha256": h, "hmac_sha256": hash_mac(partner.secret, h)} for h in hashes)
    return files.write_signed(files.SUPPRESSIONS, store_id, partner.id, partner.secret, rows)


# --- import -----------------------------------------------------------------------------------


@dataclass
class ImportReport:
    records: int = 0
    invited: int = 0
    skipped: Counter = field(default_factory=Counter)
    file_sha256: str = ""
    import_id: int | None = None
    #: records applied by an earlier, stopped run of this import (0: a fresh import)
    resumed_after: int = 0
    #: withdrawal records applied (withdrawals.py)
    withdrawn: int = 0

    def as_dict(self) -> dict[str, Any]:
        report = {
            "records": self.records,
            "invited": self.invited,
            "skipped": dict(sorted(self.skipped.items())),
            "file_sha256": self.file_sha256,
        }
        return report | ({"withdrawn": self.withdrawn} if self.withdrawn else {})


@dataclass(frozen=True)
class Contact:
    line: int
    email: str
    email_hash: str
    first_name: str | None
    consent_to: str
    given_at: datetime
    wording_version: str
    wording_hash: str
    source: str


def _contact(line: int, value: Any, now: datetime) -> Contact:
    def refuse(problem: str):
        raise FileRefused(f"line {line}: {problem}")

    if not isinstance(value, dict):
        refuse("a record must be a JSON object")
    email = value.get("email")
    if problem := _text_problem(email, 320):
        refuse(f"email {problem}")
    try:
        email = normalize_address(email)
    except InvalidAddress as exc:
        refuse(f"email {email[:80]!r}: {exc}")
    first_name = value.get("first_name")
    if first_name is not None and (problem := _text_problem(first_name, 100) or name_problem(first_name)):
        refuse(f"first_name {problem}")
    consent = value.get("consent")
    if not isinstance(consent, dict):
        refuse("no consent object: every record must carry the consent it travels on")
    to = consent.get("to")
    if problem := _text_problem(to, 50):
        refuse(f"consent.to {problem}")
    given_at = files.parse_time(consent.get("given_at"))
    if given_at is None:
        refuse("consent.given_at must be an ISO 8601 UTC time")
    if given_at > now + files.MAX_SKEW:
        refuse("consent.given_at is in the future")
    version = consent.get("wording_version")
    if problem := _text_problem(version, 50):
        refuse(f"consent.wording_version {problem}")
    wording_hash = consent.get("wording_sha256")
    if not isinstance(wording_hash, str) or not _HEX64.fullmatch(wording_hash):
        refuse("consent.wording_sha256 must be 64 lower-case hex digits")
    source = value.get("source", "")
    if problem := _text_problem(source, 100):
        refuse(f"source {problem}")
    return Contact(
        line, email, address_hash(email), first_name or None, to, given_at, version, wording_hash, source
    )


def _checked_contact(line: int, value: dict) -> Contact:
    """A record ``_contact`` accepted already (the same bytes: files.chunks checks), without the checks.

    Only a non-plain address goes through email-validator again, for its normal form.
    """
    email = value["email"]
    if not _PLAIN_ADDRESS.fullmatch(email) or "xn--" in email:
        email = normalize_address(email)
    consent = value["consent"]
    return Contact(
        line,
        email,
        address_hash(email),
        value.get("first_name") or None,
        consent["to"],
        files.parse_time(consent["given_at"]),
        consent["wording_version"],
        consent["wording_sha256"],
        value.get("source", ""),
    )


def import_contacts(
    session: Session,
    settings: Settings,
    partner: Partner,
    handle: BinaryIO,
    *,
    channel: str,
    dispatch: Callable[[list[int]], None],
    topics: tuple[str, ...] = DEFAULT_TOPICS,
) -> ImportReport:
    """Verify the whole file, then invite the people who consented to us; commits chunk by chunk.

    ``handle`` is a seekable binary file (spool a stream first, as the API does). Passes: the
    signature (hashes only), every record's validity (nothing written yet: FileRefused with the
    line of the first bad record), then chunks of ``files.CHUNK_RECORDS`` records, each applied
    and checkpointed in one transaction (``partners/checkpoint.py``). A run of a file whose
    import was stopped goes on after its last committed chunk, with the topics it started with,
    and ends with the report an unbroken run would have given. Raises ImportInterrupted if it
    stops part-way (the chunks before are kept). ``dispatch(outbox_ids)`` runs after each commit.
    """
    store_id = require_store_id(settings)
    partner_id, partner_name = partner.id, partner.name
    envelope = files.verify(
        handle, partner.secret, kind=files.CONTACTS, sender=partner_id, recipient=store_id
    )
    now = clock.now()
    log = checkpoint.unfinished(session, partner_id, "contacts", envelope.sha256)
    if log is None:
        topics = tuple(topics)
        topic_ids = _topic_ids(session, topics)
        # Every record is checked before anything is written: a bad file leaves no trace.
        for _, chunk in files.chunks(handle, envelope):
            for line, value in chunk:
                if not withdrawals.check(line, value):  # hook: withdrawal records are checked there
                    _contact(line, value, now)
        log = _start_import(session, partner_id, envelope, channel, now, list(topics))
        report = ImportReport(records=envelope.records, file_sha256=envelope.sha256, import_id=log.id)
    else:  # the same bytes were checked in full when this import started
        topics = tuple(log.topics or DEFAULT_TOPICS)
        topic_ids = _topic_ids(session, topics)
        report = ImportReport(
            records=envelope.records,
            invited=log.report.get("invited", 0),
            skipped=Counter(log.report.get("skipped", {})),
            file_sha256=envelope.sha256,
            import_id=log.id,
            resumed_after=log.applied_records,
            withdrawn=log.report.get("withdrawn", 0),
        )
    session.commit()
    done = log.applied_records
    batch_log = _BatchLog(log.id, log.file_sha256, partner_id, partner_name)
    try:
        for first, chunk in files.chunks(handle, envelope, done):
            now = clock.now()
            checkpoint.claim_chunk(session, log.id, first, len(chunk))
            plan_each_statement(session)
            # hook: withdrawal records are applied there and left out of the chunk
            chunk, withdrawn = withdrawals.apply(session, partner_id, batch_log.id, chunk)
            report.withdrawn += withdrawn
            contacts = [_checked_contact(line, value) for line, value in chunk]
            _import_batch(session, batch_log, store_id, contacts, topic_ids, topics, report, dispatch)
            last = first + len(chunk) == envelope.records
            checkpoint.save_progress(session, log.id, report.as_dict(), completed_at=now if last else None)
            session.commit()
            done = first + len(chunk)
    except (IntegrityError, FileRefused) as exc:
        session.rollback()
        why = (
            "a signup or another import added some of these addresses meanwhile"
            if isinstance(exc, IntegrityError)
            else str(exc)
        )
        raise ImportInterrupted(
            f"{why}; {done} of {envelope.records} records are imported, run the import again to finish"
        ) from None
    except BaseException:
        session.rollback()
        raise
    if envelope.records == 0:  # no chunk to carry the end time
        checkpoint.save_progress(session, log.id, report.as_dict(), completed_at=clock.now())
        session.commit()
    return report


def _topic_ids(session: Session, topics: tuple[str, ...]) -> list[int]:
    known_topics = topics_by_slug(session)
    unknown = [t for t in topics if t not in known_topics]
    if unknown:
        raise FileRefused(f"unknown topic(s): {', '.join(unknown)}")
    return [known_topics[t].id for t in topics]


def _start_import(session: Session, partner_id: str, envelope, channel: str, now, topics) -> PartnerImport:
    """The import's row, committed before the first chunk; a concurrent first run of the file loses."""
    try:
        log = checkpoint.record_import(session, partner_id, "contacts", envelope, channel, now, topics=topics)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ImportInterrupted("another run of this file started a moment ago; wait for it") from None
    return log


@dataclass(frozen=True)
class _BatchLog:
    """What a batch writes into its rows about the import (plain values: they outlive commits)."""

    id: int
    file_sha256: str
    partner_id: str
    partner_name: str


def _import_batch(
    session: Session,
    log: _BatchLog,
    store_id: str,
    batch: list[Contact],
    topic_ids: list[int],
    topics: tuple[str, ...],
    report: ImportReport,
    dispatch: Callable[[list[int]], None],
) -> None:
    if session.get_bind().dialect.name == "postgresql":
        _import_batch_pg(session, log, store_id, batch, topic_ids, topics, report, dispatch)
        return
    now = clock.now()
    partner = log  # the partner's id and name travel with the import
    hashes = list({c.email_hash for c in batch})
    known = {
        h: (sid, status)
        for sid, h, status in session.execute(
            select(Subscriber.id, Subscriber.email_hash, Subscriber.status).where(
                Subscriber.email_hash.in_(hashes)
            )
        )
    }
    suppressed = set(
        session.scalars(select(Suppression.email_hash).where(Suppression.email_hash.in_(hashes)))
    )
    opted_out_there = set(
        session.scalars(
            select(PartnerSuppression.email_hash).where(
                PartnerSuppression.partner_id == partner.partner_id,
                PartnerSuppression.email_hash.in_(hashes),
            )
        )
    )
    known_ids = [sid for sid, _ in known.values()]
    # subscriber -> invited by this import (an earlier chunk of the file) or by another one
    recently: dict[int, bool] = {}
    for sid, import_id in session.execute(
        select(PartnerInvitation.subscriber_id, PartnerInvitation.import_id).where(
            PartnerInvitation.subscriber_id.in_(known_ids),
            PartnerInvitation.created_at > now - REINVITE_AFTER,
        )
    ):
        recently[sid] = recently.get(sid, False) or import_id == log.id

    invite = _choose(batch, store_id, known, suppressed, opted_out_there, recently, report)
    if not invite:
        return
    ids = {h: sid for h, (sid, _) in known.items()}
    _write_invitations(session, log, ids, invite, topic_ids, topics, report, dispatch, now)


def _choose(
    batch: list[Contact],
    store_id: str,
    known: dict[str, tuple[int, str]],
    suppressed: set[str],
    opted_out_there: set[str],
    recently: dict[int, bool],
    report: ImportReport,
) -> list[Contact]:
    """Who of a chunk is invited; every other record is counted in the report with its reason."""
    invite: list[Contact] = []
    seen: set[str] = set()
    for contact in batch:
        if contact.consent_to != store_id:
            reason = "consent_names_another_store"
        elif contact.email_hash in suppressed:
            reason = "suppressed_here"  # our opt-outs win
        elif contact.email_hash in opted_out_there:
            reason = "opted_out_at_partner"
        elif contact.email_hash in seen or recently.get(known.get(contact.email_hash, (None,))[0]):
            reason = "duplicate_in_file"
        elif contact.email_hash in known and known[contact.email_hash][1] == SubscriberStatus.ACTIVE:
            reason = "already_subscribed"
        elif contact.email_hash in known and known[contact.email_hash][1] != SubscriberStatus.PENDING:
            reason = "unsubscribed_here"
        elif contact.email_hash in known and known[contact.email_hash][0] in recently:
            reason = "invited_recently"
        else:
            reason = None
        seen.add(contact.email_hash)
        if reason:
            report.skipped[reason] += 1
        else:
            invite.append(contact)
    return invite


def _write_invitations(session, log, ids, invite, topic_ids, topics, report, dispatch, now) -> None:
    """SQLite: the invited people's rows, one multi-row INSERT per table."""
    partner = log
    new = [c for c in invite if c.email_hash not in ids]
    if new:
        inserted = insert_rows(
            session,
            Subscriber,
            [
                {
                    "email": c.email,
                    "email_hash": c.email_hash,
                    "first_name": c.first_name,
                    "status": SubscriberStatus.PENDING,
                    "created_at": now,
                    "frequency": Frequency.ANY,
                    "time_zone": "UTC",
                }
                for c in new
            ],
            returning=("id", "email_hash"),
        )
        ids.update({h: sid for sid, h in inserted})
    subscriber_ids = [ids[c.email_hash] for c in invite]
    _add_pending_topics(session, subscriber_ids, topic_ids, now)
    outbox_by_subscriber = dict(
        (sid, oid)
        for oid, sid in insert_rows(
            session,
            OutboxEmail,
            [
                {"kind": OutboxKind.PARTNER_INVITE, "subscriber_id": sid, "created_at": now, "attempts": 0}
                for sid in subscriber_ids
            ],
            returning=("id", "subscriber_id"),
        )
    )
    outbox_ids = [outbox_by_subscriber[sid] for sid in subscriber_ids]
    insert_rows(
        session,
        PartnerInvitation,
        [
            {
                "outbox_id": oid,
                "subscriber_id": sid,
                "partner_id": partner.partner_id,
                "partner_name": partner.partner_name,
                "import_id": log.id,
                "created_at": now,
            }
            for oid, sid in zip(outbox_ids, subscriber_ids, strict=True)
        ],
    )
    insert_rows(
        session,
        ConsentEvent,
        [
            {
                "subscriber_id": ids[c.email_hash],
                "action": ConsentAction.PARTNER_IMPORTED,
                "topics": sorted(topics),
                "occurred_at": now,
                "ip": None,
                "user_agent": None,
                "source": f"partner:{partner.partner_id}"[:100],
                "wording_version": c.wording_version,
                "wording_hash": c.wording_hash,
                "details": _event_details(log, c),
            }
            for c in invite
        ],
    )
    report.invited += len(invite)
    on_commit(session, lambda ids=outbox_ids: dispatch(ids))


def _event_details(log: _BatchLog, c: Contact) -> dict[str, Any]:
    """The ``partner_imported`` event's details: where the consent came from, to the file's line."""
    return {
        "partner": log.partner_id,
        "partner_name": log.partner_name,
        "consent_to": c.consent_to,
        "consent_given_at": files.iso(c.given_at),
        "partner_source": c.source,
        "import_id": log.id,
        "file_sha256": log.file_sha256,
        "file_line": c.line,
        "email": "invitation to confirm",
    }


# PostgreSQL: a chunk goes into a temporary table by COPY (psycopg's C path: dumping the rows as
# array parameters in Python was the import's largest cost), and every lookup and INSERT is one
# set-based statement on it. The table lives for the chunk's transaction only (ON COMMIT DROP), so
# a pooled connection keeps nothing and a rolled-back chunk leaves nothing.
_STAGE = (
    "CREATE TEMPORARY TABLE partner_import_chunk (line integer PRIMARY KEY, email varchar(320),"
    " email_hash varchar(64), first_name varchar(100), wording_version varchar(50),"
    " wording_hash varchar(64), details text, subscriber_id integer) ON COMMIT DROP"
)
_STAGE_COLUMNS = ("line", "email", "email_hash", "first_name", "wording_version", "wording_hash", "details")
# Per distinct address of the chunk: its subscriber and status, our suppression, the partner's
# opt-out, and whether an invitation in the last REINVITE_AFTER came from this import or another.
_LOOKUP = text(
    "SELECT c.email_hash, s.id, s.status,"
    " EXISTS (SELECT 1 FROM suppressions x WHERE x.email_hash = c.email_hash),"
    " EXISTS (SELECT 1 FROM partner_suppressions p"
    "         WHERE p.partner_id = :partner AND p.email_hash = c.email_hash),"
    " (SELECT bool_or(i.import_id = :import_id) FROM partner_invitations i"
    "   WHERE i.subscriber_id = s.id AND i.created_at > :since)"
    " FROM (SELECT DISTINCT email_hash FROM partner_import_chunk) c"
    " LEFT JOIN subscribers s ON s.email_hash = c.email_hash"
)
_KEEP_INVITED = text("DELETE FROM partner_import_chunk WHERE line <> ALL(CAST(:lines AS integer[]))")
_KNOWN_IDS = text(
    "UPDATE partner_import_chunk c SET subscriber_id = s.id"
    " FROM subscribers s WHERE s.email_hash = c.email_hash"
)
_NEW_SUBSCRIBERS = text(
    "WITH new AS (INSERT INTO subscribers"
    " (email, email_hash, first_name, status, created_at, frequency, time_zone)"
    " SELECT email, email_hash, first_name, :status, :now, :frequency, 'UTC'"
    " FROM partner_import_chunk WHERE subscriber_id IS NULL ORDER BY line RETURNING id, email_hash)"
    " UPDATE partner_import_chunk c SET subscriber_id = new.id FROM new WHERE new.email_hash = c.email_hash"
)
_PENDING_TOPICS = text(
    "INSERT INTO subscriptions (subscriber_id, topic_id, status, updated_at)"
    " SELECT c.subscriber_id, t.id, :status, :now"
    " FROM partner_import_chunk c CROSS JOIN unnest(CAST(:topic_ids AS integer[])) AS t(id)"
    " WHERE NOT EXISTS (SELECT 1 FROM subscriptions x"
    "                   WHERE x.subscriber_id = c.subscriber_id AND x.topic_id = t.id)"
    " ORDER BY c.line, t.id"
)
_OUTBOX_AND_INVITATIONS = text(
    "WITH o AS (INSERT INTO outbox_emails (kind, subscriber_id, created_at, attempts)"
    " SELECT :kind, subscriber_id, :now, 0 FROM partner_import_chunk ORDER BY line"
    " RETURNING id, subscriber_id),"
    " i AS (INSERT INTO partner_invitations"
    " (outbox_id, subscriber_id, partner_id, partner_name, import_id, created_at)"
    " SELECT id, subscriber_id, :partner, :partner_name, :import_id, :now FROM o)"
    " SELECT id FROM o ORDER BY id"
)
_EVENTS = text(
    "INSERT INTO consent_events (subscriber_id, action, topics, occurred_at, ip, user_agent, source,"
    " wording_version, wording_hash, details)"
    " SELECT subscriber_id, :action, CAST(:topics AS json), :now, NULL, NULL, :source,"
    " wording_version, wording_hash, CAST(details AS json) FROM partner_import_chunk ORDER BY line"
)


def _import_batch_pg(
    session: Session,
    log: _BatchLog,
    store_id: str,
    batch: list[Contact],
    topic_ids: list[int],
    topics: tuple[str, ...],
    report: ImportReport,
    dispatch: Callable[[list[int]], None],
) -> None:
    """PostgreSQL: one chunk in nine statements whatever its size, the same choices as ``_choose``."""
    now = clock.now()
    session.execute(text(_STAGE))
    copy_rows(
        session,
        "partner_import_chunk",
        _STAGE_COLUMNS,
        (
            (
                c.line,
                c.email,
                c.email_hash,
                c.first_name,
                c.wording_version,
                c.wording_hash,
                json.dumps(_event_details(log, c)),
            )
            for c in batch
        ),
    )
    known: dict[str, tuple[int, str]] = {}
    suppressed: set[str] = set()
    opted_out_there: set[str] = set()
    recently: dict[int, bool] = {}
    found = session.execute(
        _LOOKUP, {"partner": log.partner_id, "import_id": log.id, "since": now - REINVITE_AFTER}
    )
    for email_hash, sid, status, ours, theirs, by_this_import in found:
        if sid is not None:
            known[email_hash] = (sid, status)
            if by_this_import is not None:
                recently[sid] = by_this_import
        if ours:
            suppressed.add(email_hash)
        if theirs:
            opted_out_there.add(email_hash)
    invite = _choose(batch, store_id, known, suppressed, opted_out_there, recently, report)
    if not invite:
        return
    session.execute(_KEEP_INVITED, {"lines": [c.line for c in invite]})
    if any(c.email_hash in known for c in invite):
        session.execute(_KNOWN_IDS)
    if any(c.email_hash not in known for c in invite):
        session.execute(
            _NEW_SUBSCRIBERS,
            {"status": SubscriberStatus.PENDING.value, "now": now, "frequency": Frequency.ANY.value},
        )
    session.execute(
        _PENDING_TOPICS, {"status": SubscriptionStatus.PENDING.value, "now": now, "topic_ids": topic_ids}
    )
    outbox_ids = list(
        session.scalars(
            _OUTBOX_AND_INVITATIONS,
            {
                "kind": OutboxKind.PARTNER_INVITE.value,
                "now": now,
                "partner": log.partner_id,
                "partner_name": log.partner_name,
                "import_id": log.id,
            },
        )
    )
    session.execute(
        _EVENTS,
        {
            "action": ConsentAction.PARTNER_IMPORTED.value,
            "topics": json.dumps(sorted(topics)),
            "now": now,
            "source": f"partner:{log.partner_id}"[:100],
        },
    )
    report.invited += len(invite)
    on_commit(session, lambda ids=outbox_ids: dispatch(ids))


def _add_pending_topics(
    session: Session, subscriber_ids: list[int], topic_ids: list[int], now: datetime
) -> None:
    have = set(
        session.execute(
            select(Subscription.subscriber_id, Subscription.topic_id).where(
                Subscription.subscriber_id.in_(subscriber_ids)
            )
        )
    )
    rows = [
        {"subscriber_id": sid, "topic_id": tid, "status": SubscriptionStatus.PENDING, "updated_at": now}
        for sid in subscriber_ids
        for tid in topic_ids
        if (sid, tid) not in have
    ]
    insert_rows(session, Subscription, rows)


@dataclass
class SuppressionReport:
    records: int = 0
    added: int = 0
    known: int = 0
    file_sha256: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "added": self.added,
            "known_already": self.known,
            "file_sha256": self.file_sha256,
        }


def import_suppressions(
    session: Session, settings: Settings, partner: Partner, handle: BinaryIO, *, channel: str
) -> SuppressionReport:
    """Store the partner's opt-outs (hashes): contacts it sends are never invited if listed.

    Entries only accumulate: a later file without a hash does not lift it (an opt-out wins).
    """
    store_id = require_store_id(settings)
    envelope = files.verify(
        handle, partner.secret, kind=files.SUPPRESSIONS, sender=partner.id, recipient=store_id
    )
    now = clock.now()
    # one transaction: the row is complete when it commits
    log = checkpoint.record_import(session, partner.id, "suppressions", envelope, channel, now, complete=True)
    report = SuppressionReport(records=envelope.records, file_sha256=envelope.sha256)
    batch: list[str] = []

    def flush() -> None:
        added = len(
            session.execute(
                dialect_insert(session, PartnerSuppression)
                .values([{"partner_id": partner.id, "email_hash": h, "received_at": now} for h in batch])
                .on_conflict_do_nothing(index_elements=["partner_id", "email_hash"])
                .returning(PartnerSuppression.email_hash)
            ).all()
        )
        report.added += added
        report.known += len(batch) - added
        batch.clear()

    for line, value in files.records(handle, envelope):
        if not isinstance(value, dict):
            raise FileRefused(f"line {line}: a record must be a JSON object")
        email_hash, mac = value.get("sha256"), value.get("hmac_sha256")
        if not isinstance(email_hash, str) or not _HEX64.fullmatch(email_hash):
            raise FileRefused(f"line {line}: sha256 must be 64 lower-case hex digits")
        if not isinstance(mac, str) or not hmac.compare_digest(
            hash_mac(partner.secret, email_hash).encode(), mac.encode("utf-8", "replace")
        ):
            raise FileRefused(f"line {line}: hmac_sha256 does not match the address hash")
        batch.append(email_hash)
        if len(batch) >= 500:
            flush()
    if batch:
        flush()
    log.report = report.as_dict()
    session.flush()
    return report
