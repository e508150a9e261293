"""Double opt-in: a signup request, its confirmation email, and the confirmation.

A confirmation link names the request it answers (its ``signup_requested`` event). Confirming
applies that request's topics and first name, and only while the request is open: once the
person has decided anything after it (confirmed, unsubscribed, changed preferences, was erased
or imported), older links change nothing. Requests by others (a stranger typing the address, a
partner's file) change nothing stored about the person until the person confirms one of them.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import timedelta

import redis
from sqlalchemy import Insert, Row, TextClause, bindparam, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.core.db import among, dialect_insert, on_commit
from newsletter.mail.addresses import mailbox_hash
from newsletter.models import (
    ConsentAction,
    ConsentEvent,
    OutboxEmail,
    OutboxKind,
    SignupRequest,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    Topic,
)
from newsletter.models.subscribers import address_hash
from newsletter.models.suppressions import LIFTED_BY_OPT_IN
from newsletter.subscribers import limits, suppression
from newsletter.subscribers.consent import RequestInfo, Wording, append_event, event_values, record_event
from newsletter.subscribers.names import clean_first_name
from newsletter.subscribers.sharing import grant_requested_shares

#: Events others can cause (anyone can type an address into the form; a partner sends a file).
#: Every other event is the person's own decision, or an operator's, and closes the requests before it.
REQUEST_ACTIONS = (ConsentAction.SIGNUP_REQUESTED, ConsentAction.PARTNER_IMPORTED)

log = logging.getLogger(__name__)
#: the ledger's word for a signup its mailbox's daily cap kept from mailing
CAPPED = "not sent: daily cap for this mailbox"


@dataclass(frozen=True)
class SignupOutcome:
    """What happened, for logs and tests; the person sees the same page whatever it says."""

    subscriber_id: int
    email_kind: OutboxKind | None  # None: no email (cap reached)
    #: the email's outbox row, if one was added
    outbox_id: int | None = None


def list_topics(session: Session) -> list[Topic]:
    """The topics on offer (not retired), in form order."""
    return list(
        session.scalars(select(Topic).where(Topic.retired_at.is_(None)).order_by(Topic.position, Topic.id))
    )


@dataclass(frozen=True)
class TopicInfo:
    id: int
    slug: str
    name: str
    description: str
    #: (language, name, description) of its labels in other languages (``topics rename --language``)
    translations: tuple[tuple[str, str, str], ...] = ()

    def in_language(self, language: str | None) -> TopicInfo:
        """This topic as people reading ``language`` see it: its label there, else the default."""
        for lang, name, description in self.translations:
            if lang == language:
                return replace(self, name=name, description=description)
        return self


def topic_info(topic: Topic) -> TopicInfo:
    labels = tuple(
        (lang, entry.get("name") or topic.name, entry.get("description", topic.description))
        for lang, entry in sorted((topic.translations or {}).items())
    )
    return TopicInfo(topic.id, topic.slug, topic.name, topic.description, labels)


_topic_cache: tuple[float, object, dict[str, TopicInfo]] | None = None
TOPIC_CACHE_SECONDS = 30


def forget_topics() -> None:
    """Drop this process's cached topics (after ``newsletter topics`` changed them); other processes
    see the change within ``TOPIC_CACHE_SECONDS``."""
    global _topic_cache
    _topic_cache = None


def topics_by_slug(session: Session) -> dict[str, TopicInfo]:
    """Topics on offer in form order, cached for a few seconds: every signup needs them, they rarely
    change. A retired topic is not among them, so nothing offers it or adds anyone to it."""
    global _topic_cache
    bind = session.get_bind()
    now = time.monotonic()
    if _topic_cache is None or _topic_cache[1] is not bind or now - _topic_cache[0] > TOPIC_CACHE_SECONDS:
        topics = {t.slug: topic_info(t) for t in list_topics(session)}
        _topic_cache = (now, bind, topics)
    return _topic_cache[2]


def retry_on_conflict(operation, session: Session, attempts: int = 3):
    """Run ``operation()`` again after a unique-constraint race (two signups of one new address)."""
    for attempt in range(attempts):
        try:
            return operation()
        except IntegrityError:
            session.rollback()
            if attempt == attempts - 1:
                raise


def find_subscriber(session: Session, normalized_email: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email_hash == address_hash(normalized_email)))


def _insert_if_new(
    session: Session, normalized_email: str, first_name: str | None, language: str | None
) -> Row | None:
    """Insert a pending subscriber in one statement.

    Returns its id and the address's suppression reason (or None), or None if the address is known.
    """
    email_hash = address_hash(normalized_email)
    values = {
        "email": normalized_email,
        "email_hash": email_hash,
        "first_name": first_name,
        "language": language,
        "status": SubscriberStatus.PENDING,
        "created_at": clock.now(),
        "suppressed_hash": email_hash,
    }
    return session.connection().execute(_new_subscriber_statement(session), values).first()


_NEW_SUBSCRIBER: dict[str, Insert] = {}


def _new_subscriber_statement(session: Session) -> Insert:
    """Built once per dialect; the suppression check rides along in RETURNING (one round trip)."""
    dialect = session.get_bind().dialect.name
    if dialect not in _NEW_SUBSCRIBER:
        subscribers, suppressions = Subscriber.__table__, Suppression.__table__
        suppressed = (
            select(suppressions.c.reason)
            .where(suppressions.c.email_hash == bindparam("suppressed_hash"))
            .scalar_subquery()
        )
        _NEW_SUBSCRIBER[dialect] = (
            dialect_insert(session, subscribers)
            .values(
                {
                    name: bindparam(name)
                    for name in ("email", "email_hash", "first_name", "language", "status", "created_at")
                }
            )
            .on_conflict_do_nothing(index_elements=["email_hash"])
            .returning(subscribers.c.id, suppressed)
        )
    return _NEW_SUBSCRIBER[dialect]


_ADD_SUBSCRIPTIONS = insert(Subscription.__table__)
_ADD_OUTBOX = insert(OutboxEmail.__table__).returning(OutboxEmail.__table__.c.id)


def request_signup(
    session: Session,
    conn: redis.Redis,
    settings: Settings,
    *,
    email: str,
    first_name: str | None,
    topic_slugs: list[str],
    wording: Wording | None,
    request: RequestInfo,
    dispatch,
    counted: limits.SignupVerdict | None = None,
    language: str | None = None,
) -> SignupOutcome:
    """Record a signup request and queue the right email (``email`` must be normalised).

    ``language``: the one the form was shown in; a new address keeps it (its confirmation email
    and its pages follow it). A known address keeps what it has: anyone can type it into the form.

    ``counted``: the mailbox was already counted against its daily cap by ``limits.check_signup``
    (the view's one Redis round trip); without it the cap is counted here.

    ``dispatch(outbox_id)`` is called only after the transaction commits (with ``dispatch=None``
    the caller dispatches ``outcome.outbox_id`` itself, after its commit). Two signups of
    one new address at the same instant: the loser raises IntegrityError; run it again
    (see ``retry_on_conflict``) and it finds the winner's row.
    """
    first_name = clean_first_name(first_name)  # raises InvalidName: no path stores a broken name
    topics = [t for t in topics_by_slug(session).values() if t.slug in set(topic_slugs)]
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql and counted is not None and counted.mail is not None:
        # PostgreSQL with Redis's cap verdict in hand: a new address's rows are one statement.
        outcome = _new_signup_in_one(
            session, conn, email, first_name, language, topics, counted.mail, request, wording, dispatch
        )
        if outcome is not None:
            return outcome
        inserted = None  # a known address: the ORM path below
    else:
        # The common case, a new address, costs one Core statement per table, no ORM object
        # (this is the hot path); the subscriber's INSERT also brings back the suppression.
        inserted = _insert_if_new(session, email, first_name, language)
    if inserted is not None and postgresql:
        # PostgreSQL: topics, ledger event and outbox row go in one statement once the verdict is known.
        new_id, reason = inserted
        subscriber_id, already_active = new_id, False
        blocked = reason is not None and suppression.reason_blocks_opt_in(SuppressionReason(reason))
    elif inserted is not None:
        new_id, reason = inserted
        if topics:
            now = clock.now()
            session.connection().execute(
                _ADD_SUBSCRIPTIONS,
                [
                    {
                        "subscriber_id": new_id,
                        "topic_id": t.id,
                        "status": SubscriptionStatus.PENDING,
                        "updated_at": now,
                    }
                    for t in topics
                ],
            )
        subscriber_id, already_active = new_id, False
        blocked = reason is not None and suppression.reason_blocks_opt_in(SuppressionReason(reason))
    else:
        # Known address: its row stays as it is; the request's topics go on its ledger event,
        # its name on a SignupRequest, both applied only if this request is confirmed.
        new_id = None
        subscriber = find_subscriber(session, email)
        subscriber_id, already_active = subscriber.id, subscriber.status == SubscriberStatus.ACTIVE
        entry = suppression.find(session, subscriber.email_hash)
        reason = entry.reason if entry is not None else None
        blocked = suppression.blocks_opt_in(entry)

    kind = OutboxKind.ALREADY_SUBSCRIBED if already_active else OutboxKind.CONFIRM
    if blocked:
        # A complaint or an operator's entry: not even a confirmation request goes out.
        verdict = f"not sent: suppressed ({SuppressionReason(reason).value})"
        if counted is not None and counted.mail is not None:
            # it sends nothing; after the commit, so a retried attempt gives it back once
            mailbox = mailbox_hash(email)
            on_commit(session, lambda: limits.give_back_confirmation(conn, mailbox))
    elif not _mail_allowed(session, conn, settings, email, counted):
        verdict = CAPPED
    else:
        verdict = kind.value
    if inserted is not None and postgresql:
        return _new_signup_rows(
            session, subscriber_id, email, topics, kind, verdict, request, wording, dispatch
        )
    event_id = append_event(
        session,
        subscriber_id,
        ConsentAction.SIGNUP_REQUESTED,
        request,
        topics=[t.slug for t in topics],
        wording=wording,
        details={"email": verdict},
    )
    if verdict != kind.value:
        log.info("subscriber %s: no email (%s)", subscriber_id, verdict)
        return SignupOutcome(subscriber_id, None)
    if new_id is None and not already_active:
        session.add(SignupRequest(event_id=event_id, subscriber_id=subscriber_id, first_name=first_name))
    outbox_id = _add_outbox(session, kind, subscriber_id, email, event_id)
    if dispatch is not None:
        on_commit(session, lambda: dispatch(outbox_id))
    return SignupOutcome(subscriber_id, kind, outbox_id)


def _new_signup_rows(
    session: Session,
    subscriber_id: int,
    email: str,
    topics: list[TopicInfo],
    kind: OutboxKind,
    verdict: str,
    request: RequestInfo,
    wording: Wording | None,
    dispatch,
) -> SignupOutcome:
    """PostgreSQL, a new address already inserted (Redis gave no verdict): its pending topics, the
    ledger event and (if it mails) the outbox row in one statement, the rows the separate INSERTs
    write on SQLite."""
    mails = verdict == kind.value
    values = {"sid": subscriber_id}
    row = _write_new_signup(session, email, topics, kind, verdict, mails, request, wording, values)
    return _new_signup_outcome(session, row.id, kind, row.outbox_id, verdict, dispatch)


def _new_signup_in_one(
    session: Session,
    conn: redis.Redis,
    email: str,
    first_name: str | None,
    language: str | None,
    topics: list[TopicInfo],
    mail_allowed: bool,
    request: RequestInfo,
    wording: Wording | None,
    dispatch,
) -> SignupOutcome | None:
    """PostgreSQL, the cap already decided by Redis: the subscriber, its pending topics, the ledger
    event and the outbox row in one statement; None (nothing written) if the address is known.

    The suppression is read in the same statement and decides there what the separate statements
    decide in Python: a blocking reason writes the event with "not sent: suppressed (<reason>)"
    and no outbox row.
    """
    kind = OutboxKind.CONFIRM
    verdict = kind.value if mail_allowed else CAPPED
    values = {
        "email": email,
        "email_hash": address_hash(email),
        "first_name": first_name,
        "language": language,
        "status": SubscriberStatus.PENDING.value,
        **_SUBSCRIBER_DEFAULTS,
    }
    row = _write_new_signup(session, email, topics, kind, verdict, mail_allowed, request, wording, values)
    if row is None:
        return None
    blocked = row.reason is not None and suppression.reason_blocks_opt_in(SuppressionReason(row.reason))
    if blocked:
        # it sends nothing; after the commit, so a retried attempt gives it back once
        mailbox = mailbox_hash(email)
        on_commit(session, lambda: limits.give_back_confirmation(conn, mailbox))
        verdict = f"not sent: suppressed ({SuppressionReason(row.reason).value})"
    return _new_signup_outcome(session, row.id, kind, row.outbox_id, verdict, dispatch)


def _write_new_signup(
    session: Session,
    email: str,
    topics: list[TopicInfo],
    kind: OutboxKind,
    verdict: str,
    mails: bool,
    request: RequestInfo,
    wording: Wording | None,
    subscriber: dict,
) -> Row | None:
    """A new address's rows in one statement (``_new_signup_statement``): (id, reason, outbox_id), or
    None if the address turned out to be known. ``subscriber``: its columns to insert, or ``sid``, the
    row already inserted."""
    event = event_values(
        0,
        ConsentAction.SIGNUP_REQUESTED,
        request,
        topics=[t.slug for t in topics],
        wording=wording,
        details={"email": verdict},
    )
    values = {
        **subscriber,
        "email_hash": address_hash(email),
        "now": clock.now(),
        "sub_status": SubscriptionStatus.PENDING.value,
        **{f"topic_{i}": t.id for i, t in enumerate(topics)},
        **{f"ev_{name}": value for name, value in event.items() if name != "subscriber_id"},
        "ev_action": event["action"].value,
        "ev_topics": json.dumps(event["topics"]),
        "ev_details": json.dumps(event["details"]),
        "kind": kind.value,
        "mailbox": mailbox_hash(email),
    }
    statement = _new_signup_statement(
        len(topics), mails, tuple(event), inserts_subscriber="sid" not in subscriber
    )
    return session.connection().execute(statement, values).first()


def _new_signup_outcome(
    session: Session, subscriber_id: int, kind: OutboxKind, outbox_id: int | None, verdict: str, dispatch
) -> SignupOutcome:
    if outbox_id is None:
        log.info("subscriber %s: no email (%s)", subscriber_id, verdict)
        return SignupOutcome(subscriber_id, None)
    if dispatch is not None:
        on_commit(session, lambda: dispatch(outbox_id))
    return SignupOutcome(subscriber_id, kind, outbox_id)


def _stored(value):
    return value.value if isinstance(value, enum.Enum) else value


#: the subscriber columns the Core INSERT fills from the model's defaults, for the SQL text below
_SUBSCRIBER_DEFAULTS = {
    f"sub_{c.name}": _stored(c.default.arg)
    for c in Subscriber.__table__.columns
    if c.default is not None
    and c.default.is_scalar
    and c.name not in ("email", "email_hash", "first_name", "language", "status", "created_at")
}
_NEW_SIGNUP: dict[tuple[int, bool, bool], TextClause] = {}  # event_values gives the same columns always


def _new_signup_statement(
    topic_count: int, mails: bool, event_columns: tuple[str, ...], *, inserts_subscriber: bool
) -> TextClause:
    """A new address's rows as INSERTs chained in CTEs (PostgreSQL runs each once), built once per
    number of topics: the subscriber (``inserts_subscriber``; else the row ``:sid``, already
    inserted), its suppression, its pending topics, the ``signup_requested`` event and the outbox row.

    The suppression's verdict is decided here as Python decides it: a reason outside
    ``LIFTED_BY_OPT_IN`` writes "not sent: suppressed (<reason>)" and no outbox row. Plain SQL
    text: SQLAlchemy does not cache the compiled form of an INSERT with CTEs, and compiling it on
    every request cost more than the round trips it saves.
    """
    key = (topic_count, mails, inserts_subscriber)
    if key not in _NEW_SIGNUP:
        if inserts_subscriber:
            defaults = [name.removeprefix("sub_") for name in _SUBSCRIBER_DEFAULTS]
            columns = ["email", "email_hash", "first_name", "language", "status", "created_at", *defaults]
            placeholders = [f":{c}" for c in columns[:5]] + [":now"] + [f":sub_{c}" for c in defaults]
            subscriber = (
                f"INSERT INTO subscribers ({', '.join(columns)}) VALUES ({', '.join(placeholders)})"
                " ON CONFLICT (email_hash) DO NOTHING RETURNING id"
            )
        else:
            subscriber = "SELECT CAST(:sid AS integer) AS id"
        liftable = ", ".join(f"'{reason.value}'" for reason in sorted(LIFTED_BY_OPT_IN))
        event_cols = [c for c in event_columns if c not in ("subscriber_id", "details")]
        event_values_sql = ", ".join(
            f"CAST(:ev_{c} AS json)" if c == "topics" else f":ev_{c}" for c in event_cols
        )
        ctes = [
            f"signup_subscriber AS ({subscriber})",
            "signup_verdict AS (SELECT s.id, r.reason,"
            f" (r.reason IS NOT NULL AND r.reason NOT IN ({liftable})) AS blocked"
            " FROM signup_subscriber s LEFT JOIN suppressions r ON r.email_hash = :email_hash)",
            "signup_event AS (INSERT INTO consent_events"
            f" (subscriber_id, {', '.join(event_cols)}, details)"
            f" SELECT v.id, {event_values_sql},"
            " CASE WHEN v.blocked"
            " THEN json_build_object('email', 'not sent: suppressed (' || v.reason || ')')"
            " ELSE CAST(:ev_details AS json) END FROM signup_verdict v RETURNING id)",
        ]
        if topic_count:
            rows = ", ".join(f"(CAST(:topic_{i} AS integer))" for i in range(topic_count))
            ctes.append(
                "signup_topics AS (INSERT INTO subscriptions (subscriber_id, topic_id, status, updated_at)"
                " SELECT v.id, t.topic_id, :sub_status, :now"
                f" FROM signup_verdict v, (VALUES {rows}) AS t (topic_id))"
            )
        if mails:
            ctes.append(
                "signup_outbox AS (INSERT INTO outbox_emails"
                " (kind, subscriber_id, created_at, attempts, request_event_id, mailbox_hash)"
                " SELECT :kind, v.id, :now, 0, e.id, :mailbox FROM signup_verdict v, signup_event e"
                " WHERE NOT v.blocked RETURNING id)"
            )
            outbox = "(SELECT id FROM signup_outbox)"
        else:
            outbox = "NULL"
        _NEW_SIGNUP[key] = text(
            f"WITH {', '.join(ctes)} SELECT v.id, v.reason, {outbox} AS outbox_id FROM signup_verdict v"
        )
    return _NEW_SIGNUP[key]


def _add_outbox(
    session: Session, kind: OutboxKind, subscriber_id: int, email: str, request_event_id: int
) -> int:
    values = {
        "kind": kind,
        "subscriber_id": subscriber_id,
        "created_at": clock.now(),
        "attempts": 0,
        "request_event_id": request_event_id,
        "mailbox_hash": mailbox_hash(email),
    }
    return session.connection().execute(_ADD_OUTBOX, values).scalar_one()


def _mail_allowed(
    session: Session,
    conn: redis.Redis,
    settings: Settings,
    email: str,
    counted: limits.SignupVerdict | None = None,
) -> bool:
    """The per-mailbox cap (subscription bombing): Redis first, the outbox if Redis is down.

    Both count the mailbox, not the spelling: ``ann+1@`` and ``a.nn@gmail`` are ``ann@``.
    ``counted``: Redis's answer already taken by ``limits.check_signup``.
    """
    limit = settings.confirmations_per_address
    mailbox = mailbox_hash(email)
    verdict = counted.mail if counted is not None else limits.confirmation_allowed(conn, mailbox, limit)
    if verdict is not None:
        return verdict
    sent_today = session.scalar(
        select(func.count(OutboxEmail.id)).where(
            OutboxEmail.mailbox_hash == mailbox,
            OutboxEmail.created_at > clock.now() - timedelta(hours=24),
        )
    )
    return (sent_today or 0) < limit


def mails_allowed(
    session: Session, conn: redis.Redis, settings: Settings, mailboxes: list[str]
) -> list[bool]:
    """``_mail_allowed`` for a batch of mailbox hashes in order (an import's chunk), one round trip.

    Each mailbox allowed counts towards the next of the same mailbox, as one at a time would. If
    Redis is down, one outbox count for the batch's mailboxes, carried on in memory.
    """
    limit = settings.confirmations_per_address
    verdicts = limits.confirmations_allowed(conn, mailboxes, limit)
    if verdicts is not None:
        return verdicts
    sent = collections.Counter(
        dict(
            session.execute(
                select(OutboxEmail.mailbox_hash, func.count(OutboxEmail.id))
                .where(
                    among(session, OutboxEmail.mailbox_hash, list(set(mailboxes))),
                    OutboxEmail.created_at > clock.now() - timedelta(hours=24),
                )
                .group_by(OutboxEmail.mailbox_hash)
            ).all()
        )
    )
    allowed = []
    for mailbox in mailboxes:
        allowed.append(sent[mailbox] < limit)
        sent[mailbox] += allowed[-1]
    return allowed


def open_request(session: Session, subscriber: Subscriber, request_id: object) -> ConsentEvent | None:
    """The request a confirmation link names, if it may still be confirmed (None otherwise).

    Open means: a request of this subscriber with nothing decided since, by the person or an
    operator (see REQUEST_ACTIONS). A later request by someone else does not close it.
    """
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        return None
    event = session.get(ConsentEvent, request_id)
    if event is None or event.subscriber_id != subscriber.id or event.action not in REQUEST_ACTIONS:
        return None
    decided_since = session.scalar(
        select(ConsentEvent.id)
        .where(
            ConsentEvent.subscriber_id == subscriber.id,
            ConsentEvent.id > event.id,
            ConsentEvent.action.not_in(REQUEST_ACTIONS),
        )
        .limit(1)
    )
    return None if decided_since is not None else event


def request_of_link(session: Session, subscriber: Subscriber, payload: dict) -> ConsentEvent | None:
    """The open request a confirmation link's payload names.

    Links made before links named their request (no ``r``) stand for the latest request, and
    only while the person has never been subscribed, so they can never undo an opt-out.
    """
    if "r" in payload:
        return open_request(session, subscriber, payload["r"])
    if subscriber.status != SubscriberStatus.PENDING:
        return None
    return open_request(session, subscriber, latest_request_id(session, subscriber.id))


def latest_request_id(session: Session, subscriber_id: int, made_by=None) -> int | None:
    """The id of the subscriber's latest request (made at or before ``made_by`` if given)."""
    statement = select(ConsentEvent.id).where(
        ConsentEvent.subscriber_id == subscriber_id, ConsentEvent.action.in_(REQUEST_ACTIONS)
    )
    if made_by is not None:
        statement = statement.where(ConsentEvent.occurred_at <= made_by)
    return session.scalar(
        statement.order_by(ConsentEvent.occurred_at.desc(), ConsentEvent.id.desc()).limit(1)
    )


def request_for_outbox(session: Session, outbox: OutboxEmail) -> int | None:
    """The request a confirmation email answers: its own, or (invitations, older rows) the latest before."""
    if outbox.request_event_id is not None:
        return outbox.request_event_id
    return latest_request_id(session, outbox.subscriber_id, made_by=outbox.created_at)


class Confirmation(enum.StrEnum):
    CONFIRMED = "confirmed"  #: this request is now the person's subscription
    ALREADY = "already"  #: nothing to do: the link was used (or overtaken) and the person is subscribed
    CLOSED = "closed"  #: the link's request was overtaken by a later decision (an opt-out, ...)
    REFUSED = "refused"  #: a complaint or an operator's suppression: only an operator can lift it


def confirm(
    session: Session,
    subscriber: Subscriber,
    asked: ConsentEvent | None,
    request: RequestInfo,
    *,
    settings: Settings | None = None,
    dispatch=None,
) -> Confirmation:
    """Confirm the request ``asked`` (from ``request_of_link``): its topics and name become the person's.

    With ``settings`` (and ``welcome_email`` on), the welcome email's outbox row is written in
    this transaction; ``dispatch(outbox_id)`` runs after the commit.
    """
    if asked is None:
        return Confirmation.ALREADY if subscriber.status == SubscriberStatus.ACTIVE else Confirmation.CLOSED
    if suppression.blocks_opt_in(suppression.find(session, subscriber.email_hash)):
        return Confirmation.REFUSED
    now = clock.now()
    by_slug = topics_by_slug(session)
    current = {s.topic_id: s for s in subscriber.subscriptions}
    activated = []
    for slug in asked.topics:
        topic = by_slug.get(slug)
        if topic is None:
            continue  # removed since the request
        subscription = current.get(topic.id)
        if subscription is None:
            subscriber.subscriptions.append(Subscription(topic_id=topic.id, status=SubscriptionStatus.ACTIVE))
        else:
            subscription.status = SubscriptionStatus.ACTIVE
        activated.append(slug)
    pending_name = session.get(SignupRequest, asked.id)
    if pending_name is not None:
        if pending_name.first_name:
            subscriber.first_name = pending_name.first_name
        elif subscriber.confirmed_at is None:
            subscriber.first_name = None  # the name on file came with someone else's request
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = subscriber.confirmed_at or now
    lifted = suppression.lift_after_opt_in(session, subscriber.email_hash)
    details: dict = {"request": asked.id}
    if lifted:
        details["suppression_lifted"] = lifted.value
    record_event(session, subscriber.id, ConsentAction.CONFIRMED, request, topics=activated, details=details)
    grant_requested_shares(session, subscriber, request, settings)  # partners ticked on the signup form
    session.flush()
    if settings is not None and settings.welcome_email:
        _add_welcome(session, subscriber, asked.id, dispatch)
    return Confirmation.CONFIRMED


def _add_welcome(session: Session, subscriber: Subscriber, request_event_id: int, dispatch) -> None:
    """Queue the welcome email unless this subscriber ever had one (once per person, ever).

    The subscriber's row is locked first (PostgreSQL), so two confirmations at the same
    instant cannot both see "no welcome yet"; SQLite serialises writers anyway.
    """
    session.execute(select(Subscriber.id).where(Subscriber.id == subscriber.id).with_for_update())
    had_one = session.scalar(
        select(OutboxEmail.id)
        .where(OutboxEmail.subscriber_id == subscriber.id, OutboxEmail.kind == OutboxKind.WELCOME)
        .limit(1)
    )
    if had_one is not None:
        return
    outbox_id = session.execute(
        insert(OutboxEmail)
        .values(
            kind=OutboxKind.WELCOME,
            subscriber_id=subscriber.id,
            created_at=clock.now(),
            attempts=0,
            request_event_id=request_event_id,
            mailbox_hash=None,  # not a confirmation request: it must not eat the mailbox's daily cap
        )
        .returning(OutboxEmail.id)
    ).scalar_one()
    if dispatch is not None:
        on_commit(session, lambda: dispatch(outbox_id))


def resend_confirmation(
    session: Session,
    conn: redis.Redis,
    settings: Settings,
    subscriber: Subscriber,
    asked: ConsentEvent,
    dispatch,
) -> bool:
    """A fresh link for the open request ``asked`` whose link expired (still under the daily cap)."""
    if subscriber.status == SubscriberStatus.ACTIVE or not _mail_allowed(
        session, conn, settings, subscriber.email
    ):
        return False
    outbox_id = _add_outbox(session, OutboxKind.CONFIRM, subscriber.id, subscriber.email, asked.id)
    on_commit(session, lambda: dispatch(outbox_id))
    return True
