"""Double opt-in: a signup request, its confirmation email, and the confirmation."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import redis
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.db import dialect_insert, on_commit
from newsletter.models import (
    ConsentAction,
    OutboxEmail,
    OutboxKind,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Topic,
)
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import limits, suppression
from newsletter.subscribers.consent import RequestInfo, Wording, record_event
from newsletter.subscribers.sharing import grant_requested_shares

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignupOutcome:
    """What happened, for logs and tests; the person sees the same page whatever it says."""

    subscriber_id: int
    email_kind: OutboxKind | None  # None: no email (cap reached)


def list_topics(session: Session) -> list[Topic]:
    return list(session.scalars(select(Topic).order_by(Topic.position, Topic.id)))


@dataclass(frozen=True)
class TopicInfo:
    id: int
    slug: str
    name: str
    description: str


_topic_cache: tuple[float, object, dict[str, TopicInfo]] | None = None
TOPIC_CACHE_SECONDS = 30


def topics_by_slug(session: Session) -> dict[str, TopicInfo]:
    """Topics in form order, cached for a few seconds: every signup needs them, they rarely change."""
    global _topic_cache
    bind = session.get_bind()
    now = time.monotonic()
    if _topic_cache is None or _topic_cache[1] is not bind or now - _topic_cache[0] > TOPIC_CACHE_SECONDS:
        topics = {t.slug: TopicInfo(t.id, t.slug, t.name, t.description) for t in list_topics(session)}
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


def _insert_if_new(session: Session, normalized_email: str, first_name: str | None) -> int | None:
    """Insert a pending subscriber in one statement; its id, or None if the address is known."""
    statement = (
        dialect_insert(session, Subscriber)
        .values(
            email=normalized_email,
            email_hash=address_hash(normalized_email),
            first_name=first_name,
            status=SubscriberStatus.PENDING,
            created_at=clock.now(),
        )
        .on_conflict_do_nothing(index_elements=["email_hash"])
        .returning(Subscriber.id)
    )
    return session.execute(statement).scalar()


def request_signup(
    session: Session,
    conn: redis.Redis,
    config: dict,
    *,
    email: str,
    first_name: str | None,
    topic_slugs: list[str],
    wording: Wording | None,
    request: RequestInfo,
    dispatch,
) -> SignupOutcome:
    """Record a signup request and queue the right email (``email`` must be normalised).

    ``dispatch(outbox_id)`` is called only after the transaction commits. Two signups of
    one new address at the same instant: the loser raises IntegrityError; run it again
    (see ``retry_on_conflict``) and it finds the winner's row.
    """
    topics = [t for t in topics_by_slug(session).values() if t.slug in set(topic_slugs)]
    # The common case, a new address, costs one statement per table (this is the hot path).
    new_id = _insert_if_new(session, email, first_name)
    if new_id is not None:
        if topics:
            session.execute(
                insert(Subscription),
                [
                    {
                        "subscriber_id": new_id,
                        "topic_id": t.id,
                        "status": SubscriptionStatus.PENDING,
                        "updated_at": clock.now(),
                    }
                    for t in topics
                ],
            )
        subscriber_id, email_hash, already_active = new_id, address_hash(email), False
    else:
        subscriber = find_subscriber(session, email)
        already_active = subscriber.status == SubscriberStatus.ACTIVE
        if not already_active:
            _add_pending_topics(subscriber, topics, first_name)
        session.flush()
        subscriber_id, email_hash = subscriber.id, subscriber.email_hash

    kind = OutboxKind.ALREADY_SUBSCRIBED if already_active else OutboxKind.CONFIRM
    blocked = suppression.find(session, email_hash)
    if suppression.blocks_opt_in(blocked):
        # A complaint or an operator's entry: not even a confirmation request goes out.
        verdict = f"not sent: suppressed ({blocked.reason.value})"
    elif not _mail_allowed(session, conn, config, subscriber_id, email_hash):
        verdict = "not sent: daily cap for this address"
    else:
        verdict = kind.value
    record_event(
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
    outbox_id = _add_outbox(session, kind, subscriber_id)
    on_commit(session, lambda: dispatch(outbox_id))
    return SignupOutcome(subscriber_id, kind)


def _add_pending_topics(subscriber: Subscriber, topics: list[TopicInfo], first_name: str | None) -> None:
    if first_name:
        subscriber.first_name = first_name
    current = {s.topic_id: s for s in subscriber.subscriptions}
    for topic in topics:
        existing = current.get(topic.id)
        if existing is None:
            subscriber.subscriptions.append(
                Subscription(topic_id=topic.id, status=SubscriptionStatus.PENDING)
            )
        elif existing.status != SubscriptionStatus.ACTIVE:
            existing.status = SubscriptionStatus.PENDING


def _add_outbox(session: Session, kind: OutboxKind, subscriber_id: int) -> int:
    return session.execute(
        insert(OutboxEmail)
        .values(kind=kind, subscriber_id=subscriber_id, created_at=clock.now(), attempts=0)
        .returning(OutboxEmail.id)
    ).scalar_one()


def _mail_allowed(
    session: Session, conn: redis.Redis, config: dict, subscriber_id: int, email_hash: str
) -> bool:
    """The per-address cap (subscription bombing): Redis first, the outbox if Redis is down."""
    limit = config["CONFIRMATIONS_PER_ADDRESS"]
    verdict = limits.confirmation_allowed(conn, email_hash, limit)
    if verdict is not None:
        return verdict
    sent_today = session.scalar(
        select(func.count(OutboxEmail.id)).where(
            OutboxEmail.subscriber_id == subscriber_id,
            OutboxEmail.created_at > clock.now() - timedelta(hours=24),
        )
    )
    return (sent_today or 0) < limit


def confirm(session: Session, subscriber: Subscriber, request: RequestInfo) -> bool:
    """Activate the subscriber and their pending topics; False if there was nothing to do."""
    pending = [s for s in subscriber.subscriptions if s.status == SubscriptionStatus.PENDING]
    if subscriber.status == SubscriberStatus.ACTIVE and not pending:
        return False  # a replayed confirmation changes nothing
    if suppression.blocks_opt_in(suppression.find(session, subscriber.email_hash)):
        return False  # only an operator can lift a complaint
    now = clock.now()
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = subscriber.confirmed_at or now
    for subscription in pending:
        subscription.status = SubscriptionStatus.ACTIVE
    lifted = suppression.lift_after_opt_in(session, subscriber.email_hash)
    record_event(
        session,
        subscriber.id,
        ConsentAction.CONFIRMED,
        request,
        topics=[s.topic.slug for s in pending],
        details={"suppression_lifted": lifted.value} if lifted else {},
    )
    grant_requested_shares(session, subscriber, request)  # partners ticked on the signup form
    session.flush()
    return True


def resend_confirmation(
    session: Session, conn: redis.Redis, config: dict, subscriber: Subscriber, dispatch
) -> bool:
    """A fresh confirmation link for someone whose link expired (still under the daily cap)."""
    if subscriber.status == SubscriberStatus.ACTIVE or not _mail_allowed(
        session, conn, config, subscriber.id, subscriber.email_hash
    ):
        return False
    outbox_id = _add_outbox(session, OutboxKind.CONFIRM, subscriber.id)
    on_commit(session, lambda: dispatch(outbox_id))
    return True
