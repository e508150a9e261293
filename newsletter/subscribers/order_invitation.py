"""A first order's thank-you may invite a non-subscriber to the newsletter: once per address, ever.

The invitation is a link, never a subscription: the link's page (``/join/<token>``) changes
nothing when opened; only the person's own click there, with the topics they tick, records a
signup request and its confirmation (source ``order invitation``, the store's event id, the
click's IP and user agent). The email reached the address, so the click is the double opt-in.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.core.db import dialect_insert
from newsletter.models import (
    ConsentAction,
    OrderInvitation,
    SignupRequest,
    StoreEvent,
    Subscriber,
    SubscriberStatus,
)
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import links, signup, suppression
from newsletter.subscribers.consent import RequestInfo, Wording, record_event
from newsletter.subscribers.tokens import Purpose, TokenError, read_token

#: the ledger's source of every event an order invitation leads to
SOURCE = "order invitation"


def eligible(session: Session, email: str) -> bool:
    """Nobody who is or was a subscriber, and no suppressed address (unsubscribed, erased, bounced...)."""
    email_hash = address_hash(email)
    if suppression.find(session, email_hash) is not None:
        return False
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_hash == email_hash))
    return subscriber is None or (
        subscriber.status == SubscriberStatus.PENDING and subscriber.confirmed_at is None
    )


def first_order(session: Session, event_row_id: int, email: str, payload: dict) -> bool:
    """The engine decides (no earlier order_placed for the address); the store's ``first_order:
    false`` vetoes, its ``true`` cannot override an earlier order the engine has seen."""
    if payload.get("first_order") is False:
        return False
    earlier = session.scalar(
        select(StoreEvent.id)
        .where(
            StoreEvent.kind == "order_placed",
            func.lower(StoreEvent.email) == email.lower(),
            StoreEvent.id < event_row_id,
        )
        .limit(1)
    )
    return earlier is None


def offer(session: Session, settings: Settings, event_row_id: int, email: str, payload: dict) -> bool:
    """Record the invitation for this order_placed event if the address gets one (in the event's
    transaction); True if its thank-you is to carry it. The unique address hash makes it once, ever."""
    if not settings.order_invitation or not first_order(session, event_row_id, email, payload):
        return False
    if not eligible(session, email):
        return False
    inserted = session.execute(
        dialect_insert(session, OrderInvitation)
        .values(email_hash=address_hash(email), store_event_id=event_row_id, invited_at=clock.now())
        .on_conflict_do_nothing(index_elements=["email_hash"])
        .returning(OrderInvitation.id)
    ).scalar()
    return inserted is not None


def invite_url(session: Session, settings: Settings, event: StoreEvent) -> str | None:
    """The join link for this thank-you, if it carries the invitation and the address may still have it
    (checked again when sending: the person may have subscribed or been suppressed since)."""
    invitation = session.scalar(select(OrderInvitation).where(OrderInvitation.store_event_id == event.id))
    if invitation is None or invitation.accepted_at is not None or not eligible(session, event.email):
        return None
    return links.order_invite_url(settings, invitation.id, invitation.email_hash)


@dataclass(frozen=True)
class Invitation:
    row: OrderInvitation
    email: str
    event_id: str  #: the store's id of the order_placed event
    subscriber: Subscriber | None


def read(session: Session, settings: Settings, token: str) -> Invitation:
    """The invitation a join link names, or TokenError (tampered, expired, or erased since: ``gone``)."""
    payload = read_token(settings, Purpose.ORDER_INVITE, token, links.max_age(settings, Purpose.ORDER_INVITE))
    wanted = payload.get("i") if isinstance(payload, dict) else None
    row = session.get(OrderInvitation, wanted) if isinstance(wanted, int) else None
    event = session.get(StoreEvent, row.store_event_id) if row and row.store_event_id else None
    if row is None or event is None or row.email_hash[:16] != payload.get("h"):
        raise TokenError("the person this link was made for is no longer on file", gone=True)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_hash == row.email_hash))
    return Invitation(row, event.email, event.event_id, subscriber)


def accept(
    session: Session,
    settings: Settings,
    invitation: Invitation,
    topic_slugs: list[str],
    wording: Wording,
    request: RequestInfo,
    dispatch,
) -> signup.Confirmation:
    """The person clicked "join" on the page: their request and its confirmation, in one transaction."""
    subscriber = invitation.subscriber
    if subscriber is not None and subscriber.status == SubscriberStatus.ACTIVE:
        return signup.Confirmation.ALREADY
    if suppression.blocks_opt_in(suppression.find(session, invitation.row.email_hash)):
        return signup.Confirmation.REFUSED
    known = subscriber is not None
    if subscriber is None:
        subscriber = Subscriber(
            email=invitation.email,
            email_hash=invitation.row.email_hash,
            status=SubscriberStatus.PENDING,
            created_at=clock.now(),
            language=wording.language,  # the page's: their emails and pages follow it
        )
        session.add(subscriber)
        session.flush()  # a race with another signup of the address: IntegrityError, retried by the view
    topics = [t.slug for t in signup.topics_by_slug(session).values() if t.slug in set(topic_slugs)]
    asked = record_event(
        session,
        subscriber.id,
        ConsentAction.SIGNUP_REQUESTED,
        request,
        topics=topics,
        wording=wording,
        details={"store_event": invitation.event_id, "order_invitation": invitation.row.id},
    )
    session.flush()
    if known:  # a name on file came with someone else's unconfirmed request: confirming clears it
        session.add(SignupRequest(event_id=asked.id, subscriber_id=subscriber.id, first_name=None))
        session.flush()
    outcome = signup.confirm(session, subscriber, asked, request, settings=settings, dispatch=dispatch)
    if outcome == signup.Confirmation.CONFIRMED:
        invitation.row.accepted_at = clock.now()
    return outcome
