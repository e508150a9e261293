"""The one entry point of the feedback loop: a signal lands on its row and acts at once.

Every way in (``bounces serve``, ``bounces import``, provider webhooks, click and unsubscribe
links) builds a :class:`~newsletter.feedback.signals.Signal` and calls :func:`record`. It finds
the delivery (or outbox) row the signal names, appends one ``delivery_events`` row (a replay of
the same provider event is a no-op), updates the delivery's summary, suppresses the address
when the signal calls for it, and lets the campaign's protection look at its rates. The
caller commits: a way in that records many signals commits them together or not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.core.vocabulary import SuppressionReason
from newsletter.feedback import protection
from newsletter.feedback.signals import Signal
from newsletter.mail import verp
from newsletter.models import (
    ConsentAction,
    Delivery,
    DeliveryEvent,
    OutboxEmail,
    SignalKind,
    StoreEvent,
    Subscriber,
)
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import suppression
from newsletter.subscribers.consent import RequestInfo, record_event

log = logging.getLogger(__name__)

#: the delivery's summary column each kind sets once (its first occurrence)
_FIRST = {
    SignalKind.COMPLAINT: "complained_at",
    SignalKind.CLICK: "first_click_at",
    SignalKind.OPEN: "opened_at",
    SignalKind.UNSUBSCRIBE: "unsubscribed_at",
}


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :func:`record` did with one signal."""

    event_id: int | None = None
    #: the same provider event was recorded before: nothing changed
    duplicate: bool = False
    #: no row of ours matches: logged and ignored
    unmatched: bool = False
    delivery_id: int | None = None
    campaign_id: int | None = None
    #: the suppression reason the signal caused (None: none)
    suppressed: SuppressionReason | None = None
    #: the campaign paused itself because of it: the reason
    paused: str | None = None


@dataclass(frozen=True, slots=True)
class _Target:
    delivery: Delivery | None
    outbox: OutboxEmail | None
    subscriber_id: int


def _normalised_message_id(value: str) -> str:
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


def _find(session: Session, signal: Signal) -> _Target | None:
    """The row the signal names: a verified id, a verified VERP tag, or our Message-ID."""
    delivery = outbox = None
    if signal.delivery_id is not None:
        delivery = session.get(Delivery, signal.delivery_id)
    elif signal.outbox_id is not None:
        outbox = session.get(OutboxEmail, signal.outbox_id)
    elif signal.verp is not None:
        if signal.verp.kind == verp.DELIVERY:
            delivery = session.get(Delivery, signal.verp.row_id)
        else:
            outbox = session.get(OutboxEmail, signal.verp.row_id)
    elif signal.message_id:
        wanted = _normalised_message_id(signal.message_id)
        delivery = session.scalar(select(Delivery).where(Delivery.message_id == wanted).limit(1))
        if delivery is None:
            outbox = session.scalar(select(OutboxEmail).where(OutboxEmail.message_id == wanted).limit(1))
    if delivery is not None:
        return _Target(delivery, None, delivery.subscriber_id)
    if outbox is not None:
        return _Target(None, outbox, outbox.subscriber_id)
    return None


def _already(session: Session, signal: Signal) -> bool:
    if not signal.provider_event_id:
        return False
    return (
        session.scalar(
            select(DeliveryEvent.id).where(
                DeliveryEvent.source == signal.source,
                DeliveryEvent.provider_event_id == signal.provider_event_id[:255],
            )
        )
        is not None
    )


def record(session: Session, settings: Settings, signal: Signal) -> Recorded:
    """Record one signal on the row it names and act on it; the caller commits."""
    if _already(session, signal):
        return Recorded(duplicate=True)
    target = _find(session, signal)
    if target is None:
        log.info("feedback %s from %s names no message of ours; ignored", signal.kind.value, signal.source)
        return Recorded(unmatched=True)
    email_hash = session.scalar(select(Subscriber.email_hash).where(Subscriber.id == target.subscriber_id))
    if email_hash is None and target.outbox is not None and target.outbox.store_event_id is not None:
        # store mail goes to the event's address, not to a subscriber: that address is suppressed
        store_event = session.get(StoreEvent, target.outbox.store_event_id)
        email_hash = address_hash(store_event.email) if store_event else None
    delivery = target.delivery
    at = signal.at or clock.now()
    event = DeliveryEvent(
        delivery_id=delivery.id if delivery else None,
        outbox_id=target.outbox.id if target.outbox else None,
        campaign_id=delivery.campaign_id if delivery else None,
        email_hash=email_hash,
        kind=signal.kind,
        at=at,
        source=signal.source[:40],
        provider_event_id=signal.provider_event_id[:255] if signal.provider_event_id else None,
        status_code=signal.status_code[:16] if signal.status_code else None,
        diagnostic=_diagnostic(signal),
        link=signal.link,
        user_agent=signal.user_agent[:300] if signal.user_agent else None,
    )
    try:
        with session.begin_nested():  # a concurrent replay of the same event loses the race here
            session.add(event)
    except IntegrityError:
        return Recorded(duplicate=True)
    if delivery is not None:
        _summarise(delivery, signal.kind, at)
    suppressed = _suppress(session, settings, signal, email_hash, target, at)
    paused = None
    if delivery is not None and signal.kind in (SignalKind.BOUNCE_HARD, SignalKind.COMPLAINT):
        session.flush()
        paused = protection.check(session, settings, delivery.campaign_id)
    return Recorded(
        event_id=event.id,
        delivery_id=delivery.id if delivery else None,
        campaign_id=delivery.campaign_id if delivery else None,
        suppressed=suppressed,
        paused=paused,
    )


def _diagnostic(signal: Signal) -> str | None:
    parts = [
        p for p in (signal.diagnostic, f"recipient: {signal.recipient}" if signal.recipient else None) if p
    ]
    return "; ".join(parts)[:2000] if parts else None


def _summarise(delivery: Delivery, kind: SignalKind, at) -> None:
    """The delivery row's summary: first of each kind; a hard bounce outranks a soft one."""
    if kind in (SignalKind.BOUNCE_HARD, SignalKind.BOUNCE_SOFT):
        if delivery.bounced_at is None:
            delivery.bounced_at = at
        if kind == SignalKind.BOUNCE_HARD or delivery.bounce_kind is None:
            delivery.bounce_kind = "hard" if kind == SignalKind.BOUNCE_HARD else "soft"
        return
    column = _FIRST.get(kind)
    if column and getattr(delivery, column) is None:
        setattr(delivery, column, at)


def _suppress(
    session: Session, settings: Settings, signal: Signal, email_hash: str, target: _Target, at
) -> SuppressionReason | None:
    """Hard bounce, too many soft bounces, complaint: the address is suppressed at once."""
    source = f"{signal.source}:{signal.status_code}" if signal.status_code else signal.source
    if signal.kind == SignalKind.BOUNCE_HARD:
        suppression.suppress(
            session, email_hash, SuppressionReason.BOUNCED, source, (signal.diagnostic or "")[:300]
        )
        return SuppressionReason.BOUNCED
    if signal.kind == SignalKind.BOUNCE_SOFT:
        since = at - timedelta(days=settings.soft_bounce_days)
        count = session.scalar(
            select(func.count(DeliveryEvent.id)).where(
                DeliveryEvent.email_hash == email_hash,
                DeliveryEvent.kind == SignalKind.BOUNCE_SOFT,
                DeliveryEvent.at >= since,
            )
        )
        if count >= settings.soft_bounce_limit:
            note = f"{count} soft bounces in {settings.soft_bounce_days} days"
            suppression.suppress(session, email_hash, SuppressionReason.BOUNCED, source, note)
            return SuppressionReason.BOUNCED
        return None
    if signal.kind == SignalKind.COMPLAINT:
        suppression.suppress(session, email_hash, SuppressionReason.COMPLAINED, source, "marked as spam")
        details = (
            {"campaign_id": target.delivery.campaign_id}
            if target.delivery
            else {"outbox_id": target.outbox.id}
        )
        if target.subscriber_id is not None:  # store mail has no subscriber, hence no ledger
            record_event(
                session,
                target.subscriber_id,
                ConsentAction.COMPLAINED,
                RequestInfo(ip=None, user_agent=signal.user_agent, source=f"complaint:{signal.source}"),
                details=details,
            )
        return SuppressionReason.COMPLAINED
    return None
