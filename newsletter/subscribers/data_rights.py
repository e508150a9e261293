"""What the engine holds about one person: the export (GDPR Art. 15/20) and the erasure (Art. 17)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.models import (
    Campaign,
    ConsentAction,
    ConsentEvent,
    Customer,
    Delivery,
    OrderInvitation,
    OutboxEmail,
    PartnerShare,
    SignupRequest,
    StoreEvent,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SuppressionReason,
)
from newsletter.models.consent import PSEUDONYMISED_IP
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import suppression
from newsletter.subscribers.consent import RequestInfo, record_event
from newsletter.subscribers.signup import find_subscriber


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() + "Z" if moment else None


def _store_events_of(email: str):
    """The store's events about an address (any spelling of its case), as a subquery of ids."""
    return select(StoreEvent.id).where(func.lower(StoreEvent.email) == email.lower())


def store_data(session: Session, email: str) -> dict[str, Any]:
    """What the store's events left about an address: the events, the store mail, the invitation."""
    events = session.scalars(
        select(StoreEvent).where(StoreEvent.id.in_(_store_events_of(email))).order_by(StoreEvent.id)
    ).all()
    # no events, no query: an empty IN still reads the whole outbox on SQLite
    mail = (
        session.scalars(
            select(OutboxEmail)
            .where(OutboxEmail.store_event_id.in_([e.id for e in events]))
            .order_by(OutboxEmail.id)
        ).all()
        if events
        else []
    )
    invitation = session.scalar(
        select(OrderInvitation).where(OrderInvitation.email_hash == address_hash(email))
    )
    return {
        "store_events": [
            {
                "event_id": e.event_id,
                "kind": e.kind,
                "received_at": _iso(e.created_at),
                "status": e.result.get("status"),
                "details": e.payload,
            }
            for e in events
        ],
        "store_emails_sent": [
            {"kind": m.kind.value, "sent_at": _iso(m.sent_at), "message_id": m.message_id}
            for m in mail
            if m.sent_at
        ],
        "order_invitation": None
        if invitation is None
        else {"invited_at": _iso(invitation.invited_at), "accepted_at": _iso(invitation.accepted_at)},
    }


def _customer_data(session: Session, email_hash: str) -> dict[str, Any] | None:
    customer = session.scalar(select(Customer).where(Customer.email_hash == email_hash))
    if customer is None:
        return None
    return {
        "orders_count": customer.orders_count,
        "lifetime_value": str(customer.lifetime_value),
        "last_order_at": _iso(customer.last_order_at),
        "tier": customer.tier,
        "attributes": customer.attributes,
    }


def export_address(session: Session, normalized_email: str) -> dict[str, Any] | None:
    """The export for an address: a subscriber's, or what is held without a subscriber (store events,
    customer data, a suppression); None if nothing at all is held."""
    subscriber = find_subscriber(session, normalized_email)
    if subscriber is not None:
        return export_data(session, subscriber)
    email_hash = address_hash(normalized_email)
    entry = suppression.find(session, email_hash)
    data = {
        "email": normalized_email,
        "subscriber": None,
        "suppressed": {"reason": entry.reason.value, "since": _iso(entry.created_at)} if entry else None,
        "customer_data": _customer_data(session, email_hash),
        **store_data(session, normalized_email),
    }
    held = data["suppressed"] or data["customer_data"] or data["store_events"] or data["order_invitation"]
    return data if held else None


def export_data(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """Everything held about the person, JSON-ready."""
    events = session.scalars(
        select(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber.id).order_by(ConsentEvent.id)
    ).all()
    emails = session.scalars(
        select(OutboxEmail).where(OutboxEmail.subscriber_id == subscriber.id).order_by(OutboxEmail.id)
    )
    deliveries = session.execute(
        select(Campaign.name, Delivery.state, Delivery.sent_at, Delivery.reason)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(Delivery.id)
    ).all()
    requests = session.scalars(
        select(SignupRequest)
        .where(SignupRequest.subscriber_id == subscriber.id)
        .order_by(SignupRequest.event_id)
    )
    entry = suppression.find(session, subscriber.email_hash)
    return {
        "email": subscriber.email,
        "first_name": subscriber.first_name,
        "status": subscriber.status.value,
        "created_at": _iso(subscriber.created_at),
        "confirmed_at": _iso(subscriber.confirmed_at),
        "frequency": subscriber.frequency.value,
        "paused_until": _iso(subscriber.paused_until),
        "time_zone": subscriber.time_zone,
        "topics": {s.topic.slug: s.status.value for s in subscriber.subscriptions},
        # a retired topic stays in "topics" as it was; no email of it is sent any more
        "topics_retired": {
            s.topic.slug: _iso(s.topic.retired_at) for s in subscriber.subscriptions if s.topic.retired_at
        },
        "partner_sharing": {p.partner_id: p.granted for p in subscriber.partner_shares},
        # the recipients of the address (Art. 15(1)(c)): one entry per export to a partner
        "partner_disclosures": [
            {
                "partner": e.details.get("partner"),
                "partner_name": e.details.get("partner_name"),
                "at": _iso(e.occurred_at),
                "exchange_id": e.details.get("exchange_id"),
            }
            for e in events
            if e.action == ConsentAction.PARTNER_DISCLOSED
        ],
        # names typed with later signups of this address, used only if that signup is confirmed
        "unconfirmed_signups": [
            {"requested_at": _iso(r.created_at), "first_name": r.first_name} for r in requests
        ],
        "suppressed": {"reason": entry.reason.value, "since": _iso(entry.created_at)} if entry else None,
        "consent_ledger": [
            {
                "action": e.action.value,
                "at": _iso(e.occurred_at),
                "topics": e.topics,
                "ip": e.ip,
                "user_agent": e.user_agent,
                "source": e.source,
                "wording_version": e.wording_version,
                "wording_sha256": e.wording_hash,
                "details": e.details,
            }
            for e in events
        ],
        "emails_sent": [
            {"kind": m.kind.value, "sent_at": _iso(m.sent_at), "message_id": m.message_id}
            for m in emails
            if m.sent_at
        ],
        "campaigns": [
            {"campaign": name, "state": state.value, "sent_at": _iso(sent_at), "reason": reason}
            for name, state, sent_at, reason in deliveries
        ],
        "customer_data": _customer_data(session, subscriber.email_hash),
        **store_data(session, subscriber.email),
    }


def describe_subscriber(session: Session, normalized_email: str) -> dict[str, Any] | None:
    """The export for an address, or None if unknown."""
    subscriber = find_subscriber(session, normalized_email)
    return export_data(session, subscriber) if subscriber else None


def erase(session: Session, subscriber: Subscriber, request: RequestInfo) -> None:
    """Erase the person: personal data gone from every table, ledger kept pseudonymised.

    The suppression entry (a hash of the address) stays so that the address is never
    mailed again, unless the person signs up afresh and confirms.
    """
    if subscriber.status == SubscriberStatus.ERASED:
        return
    suppression.suppress(session, subscriber.email_hash, SuppressionReason.ERASED, request.source)
    sid = subscriber.id
    session.execute(delete(Subscription).where(Subscription.subscriber_id == sid))
    session.execute(delete(PartnerShare).where(PartnerShare.subscriber_id == sid))
    session.execute(delete(SignupRequest).where(SignupRequest.subscriber_id == sid))
    session.execute(delete(OutboxEmail).where(OutboxEmail.subscriber_id == sid))
    _erase_address_data(session, subscriber.email, subscriber.email_hash)
    # The one sanctioned change to the ledger: its network identity is pseudonymised.
    session.execute(
        update(ConsentEvent)
        .where(ConsentEvent.subscriber_id == sid)
        .values(ip=PSEUDONYMISED_IP, user_agent=None)
        .execution_options(synchronize_session=False)
    )
    session.expire(subscriber)
    subscriber.email = f"erased-{sid}"
    subscriber.email_hash = f"erased:{secrets.token_hex(28)}"  # breaks every link issued before
    subscriber.first_name = None
    subscriber.status = SubscriberStatus.ERASED
    subscriber.paused_until = None
    subscriber.time_zone = "UTC"
    subscriber.erased_at = clock.now()
    record_event(
        session,
        sid,
        ConsentAction.ERASED,
        RequestInfo(None, None, request.source),
        details={"kept": "this ledger (pseudonymised) and a hash of the address on the suppression list"},
    )
    session.flush()


def _erase_address_data(session: Session, email: str, email_hash: str) -> None:
    """What is held by address, subscriber or not: customer data, the store's events about it (orders,
    back-in-stock requests) with their mail, and its order invitation. Deleted, not anonymised: the
    store keeps its own order records; these copies only served the mail."""
    session.execute(delete(Customer).where(Customer.email_hash == email_hash))
    store_events = _store_events_of(email)
    session.execute(delete(OrderInvitation).where(OrderInvitation.email_hash == email_hash))
    session.execute(delete(OutboxEmail).where(OutboxEmail.store_event_id.in_(store_events)))
    session.execute(delete(StoreEvent).where(StoreEvent.id.in_(store_events)))


def erase_address(session: Session, normalized_email: str, request: RequestInfo) -> Subscriber | None:
    """Erase by address: the subscriber's erasure if there is one, else what is held about the address
    without a subscriber; either way its hash stays on the suppression list (erased), so it is never
    invited again. Returns the subscriber erased, if any."""
    subscriber = find_subscriber(session, normalized_email)
    if subscriber is not None:
        erase(session, subscriber, request)
        return subscriber
    email_hash = address_hash(normalized_email)
    _erase_address_data(session, normalized_email, email_hash)
    suppression.suppress(session, email_hash, SuppressionReason.ERASED, request.source)
    session.flush()
    return None
