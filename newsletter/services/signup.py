"""Double opt-in: a signup request, its confirmation email, and the confirmation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import redis
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter import clock
from newsletter.db import on_commit
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
from newsletter.services import limits
from newsletter.services.consent import RequestInfo, Wording, record_event
from newsletter.services.tokens import Purpose, TokenError, make_token, read_token

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignupOutcome:
    """What happened, for logs and tests; the person sees the same page whatever it says."""

    subscriber_id: int
    email_kind: OutboxKind | None  # None: no email (cap reached)


def list_topics(session: Session) -> list[Topic]:
    return list(session.scalars(select(Topic).order_by(Topic.position, Topic.id)))


def find_subscriber(session: Session, normalized_email: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email_hash == address_hash(normalized_email)))


def _get_or_create(session: Session, normalized_email: str) -> tuple[Subscriber, bool]:
    subscriber = find_subscriber(session, normalized_email)
    if subscriber is not None:
        return subscriber, False
    subscriber = Subscriber(
        email=normalized_email, email_hash=address_hash(normalized_email), status=SubscriberStatus.PENDING
    )
    try:
        with session.begin_nested():
            session.add(subscriber)
    except IntegrityError:
        # Two signups of one new address at the same moment: the other one won.
        subscriber = find_subscriber(session, normalized_email)
        assert subscriber is not None
        return subscriber, False
    return subscriber, True


def request_signup(
    session: Session,
    conn: redis.Redis,
    config: dict,
    *,
    email: str,
    first_name: str | None,
    topic_slugs: list[str],
    wording: Wording,
    request: RequestInfo,
    dispatch,
) -> SignupOutcome:
    """Record a signup request and queue the right email (``email`` must be normalised).

    ``dispatch(outbox_id)`` is called only after the transaction commits.
    """
    subscriber, _created = _get_or_create(session, email)
    topics = [t for t in list_topics(session) if t.slug in set(topic_slugs)]
    already_active = subscriber.status == SubscriberStatus.ACTIVE

    if not already_active:
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
    session.flush()

    kind = OutboxKind.ALREADY_SUBSCRIBED if already_active else OutboxKind.CONFIRM
    allowed = _mail_allowed(session, conn, config, subscriber)
    record_event(
        session,
        subscriber.id,
        ConsentAction.SIGNUP_REQUESTED,
        request,
        topics=[t.slug for t in topics],
        wording=wording,
        details={"email": kind.value if allowed else "not sent: daily cap for this address"},
    )
    if not allowed:
        log.info("subscriber %s: confirmation cap reached, no email", subscriber.id)
        return SignupOutcome(subscriber.id, None)
    outbox = OutboxEmail(kind=kind, subscriber_id=subscriber.id)
    session.add(outbox)
    session.flush()
    outbox_id = outbox.id
    on_commit(session, lambda: dispatch(outbox_id))
    return SignupOutcome(subscriber.id, kind)


def _mail_allowed(session: Session, conn: redis.Redis, config: dict, subscriber: Subscriber) -> bool:
    """The per-address cap (subscription bombing): Redis first, the outbox if Redis is down."""
    limit = config["CONFIRMATIONS_PER_ADDRESS"]
    verdict = limits.confirmation_allowed(conn, subscriber.email_hash, limit)
    if verdict is not None:
        return verdict
    sent_today = session.scalar(
        select(func.count(OutboxEmail.id)).where(
            OutboxEmail.subscriber_id == subscriber.id,
            OutboxEmail.created_at > clock.now() - timedelta(hours=24),
        )
    )
    return (sent_today or 0) < limit


def confirmation_token(config: dict, subscriber: Subscriber) -> str:
    # The hash prefix ties the link to this address even if an id is ever reused.
    return make_token(config, Purpose.CONFIRM, {"s": subscriber.id, "h": subscriber.email_hash[:16]})


def subscriber_from_confirmation(session: Session, config: dict, token: str) -> Subscriber:
    """The subscriber a confirmation link is for, or TokenError."""
    max_age = config["CONFIRM_MAX_AGE_DAYS"] * 86400
    try:
        payload = read_token(config, Purpose.CONFIRM, token, max_age)
    except TokenError as exc:
        if exc.expired:
            exc.payload = _subscriber_for(session, exc.payload)
        raise
    subscriber = _subscriber_for(session, payload)
    if subscriber is None:
        raise TokenError("this link is not valid")
    return subscriber


def _subscriber_for(session: Session, payload) -> Subscriber | None:
    if not isinstance(payload, dict) or not isinstance(payload.get("s"), int):
        return None
    subscriber = session.get(Subscriber, payload["s"])
    if subscriber is None or subscriber.email_hash[:16] != payload.get("h"):
        return None
    return subscriber


def confirm(session: Session, subscriber: Subscriber, request: RequestInfo) -> bool:
    """Activate the subscriber and their pending topics; False if there was nothing to do."""
    pending = [s for s in subscriber.subscriptions if s.status == SubscriptionStatus.PENDING]
    if subscriber.status == SubscriberStatus.ACTIVE and not pending:
        return False  # a replayed confirmation changes nothing
    now = clock.now()
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = subscriber.confirmed_at or now
    for subscription in pending:
        subscription.status = SubscriptionStatus.ACTIVE
    record_event(
        session,
        subscriber.id,
        ConsentAction.CONFIRMED,
        request,
        topics=[s.topic.slug for s in pending],
    )
    session.flush()
    return True


def resend_confirmation(
    session: Session, conn: redis.Redis, config: dict, subscriber: Subscriber, dispatch
) -> bool:
    """A fresh confirmation link for someone whose link expired (still under the daily cap)."""
    if subscriber.status == SubscriberStatus.ACTIVE or not _mail_allowed(session, conn, config, subscriber):
        return False
    outbox = OutboxEmail(kind=OutboxKind.CONFIRM, subscriber_id=subscriber.id)
    session.add(outbox)
    session.flush()
    outbox_id = outbox.id
    on_commit(session, lambda: dispatch(outbox_id))
    return True
