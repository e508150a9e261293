"""Delivery of transactional mail from the outbox: claim, build, send, mark sent (or give up)."""

from __future__ import annotations

import logging
from datetime import timedelta
from email.utils import parseaddr

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.core.languages import resolve
from newsletter.mail import verp
from newsletter.mail.branding import from_header
from newsletter.mail.message import build_message
from newsletter.mail.templates import render_transactional
from newsletter.mail.transports import Transport, TransportError
from newsletter.models import (
    OutboxEmail,
    OutboxKind,
    PartnerInvitation,
    StoreEvent,
    Subscriber,
    SubscriberStatus,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    Topic,
)
from newsletter.models.outbox import MAX_ATTEMPTS, STORE_KINDS
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import links, lost_links, order_invitation, partner_cap, suppression
from newsletter.subscribers.signup import request_for_outbox

log = logging.getLogger(__name__)

#: A claim older than this belongs to a worker that died; the sweep hands it out again.
STALE_CLAIM = timedelta(minutes=10)


def claim(session: Session, outbox_id: int, invites_per_day: int | None = None) -> bool:
    """Take the row for this worker and count the attempt; False if it is sent, given up, out of
    attempts, another worker holds it, or it is held back (``not_before``).

    A partner invitation also takes a slot of its partner's day (``invites_per_day``,
    partner_cap.py); with the day full it is held until midnight UTC instead (committed by the
    caller, as the claim is), no attempt counted.
    """
    now = clock.now()
    result = session.execute(
        update(OutboxEmail)
        .where(
            OutboxEmail.id == outbox_id,
            OutboxEmail.sent_at.is_(None),
            OutboxEmail.failed_at.is_(None),
            OutboxEmail.attempts < MAX_ATTEMPTS,
            or_(OutboxEmail.claimed_at.is_(None), OutboxEmail.claimed_at < now - STALE_CLAIM),
            or_(OutboxEmail.not_before.is_(None), OutboxEmail.not_before <= now),
        )
        .values(claimed_at=now, attempts=OutboxEmail.attempts + 1)
    )
    if result.rowcount != 1:
        return False
    partner_id = partner_cap.partner_of(session, outbox_id) if invites_per_day else None
    if partner_id is None or partner_cap.take_invite_slot(session, partner_id, now.date(), invites_per_day):
        return True
    session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == outbox_id)
        .values(claimed_at=None, attempts=OutboxEmail.attempts - 1, not_before=partner_cap.next_day(now))
    )
    return False


def deliver(session: Session, settings: Settings, transport: Transport, outbox_id: int) -> str | None:
    """Send one claimed outbox email and mark it sent; returns its Message-ID.

    A permanent refusal (5xx, no SMTPUTF8 for a non-ASCII address) or a failure at the last
    allowed attempt gives the row up and returns None; any other failure releases the claim
    and raises, so that RQ retries.
    """
    outbox = session.get(OutboxEmail, outbox_id)
    if outbox is None or outbox.sent_at is not None or outbox.failed_at is not None:
        return None
    if outbox.kind in STORE_KINDS:
        event = session.get(StoreEvent, outbox.store_event_id)
        if event is None or store_address_suppressed(session, event.email):
            give_up(outbox, "the address bounced or complained" if event else "the store event is gone")
            session.commit()
            return None
        invite = (
            order_invitation.invite_url(session, settings, event)
            if outbox.kind == OutboxKind.ORDER_PLACED
            else None
        )
        message = build_store_mail(settings, outbox.kind, event, invite_url=invite)
    else:
        subscriber = session.get(Subscriber, outbox.subscriber_id)
        refusal = (
            welcome_refusal(session, subscriber)
            if outbox.kind == OutboxKind.WELCOME
            else lost_links.refusal(session, subscriber)
            if outbox.kind == OutboxKind.LINKS
            else None
        )
        if refusal is not None:
            give_up(outbox, refusal)
            session.commit()
            return None
        message = build_subscriber_mail(session, settings, outbox, subscriber)
    try:
        transport.send(message, envelope_from=verp.return_path(settings, verp.OUTBOX, outbox.id))
    except Exception as exc:
        permanent = isinstance(exc, TransportError) and not exc.temporary
        if not permanent and outbox.attempts < MAX_ATTEMPTS:
            partner_cap.give_back(session, outbox)  # the retry takes a slot of its own day
            outbox.claimed_at = None  # let the retry (or the sweep) take it again
            outbox.last_error = str(exc)[:1000]
            session.commit()
            raise
        give_up(outbox, str(exc) if permanent else f"gave up after {outbox.attempts} attempts: {exc}")
        session.commit()
        log.debug("outbox %s failed", outbox_id, exc_info=True)
        return None
    outbox.sent_at = clock.now()
    outbox.message_id = message["Message-ID"]
    return outbox.message_id


def build_subscriber_mail(session: Session, settings: Settings, outbox: OutboxEmail, subscriber: Subscriber):
    extra = invitation_context(session, outbox.id) if outbox.kind == OutboxKind.PARTNER_INVITE else {}
    if outbox.kind == OutboxKind.WELCOME:
        extra = welcome_context(session, subscriber, resolve(subscriber.language, settings.default_language))
    if outbox.kind in (OutboxKind.CONFIRM, OutboxKind.PARTNER_INVITE):
        extra["request_id"] = request_for_outbox(session, outbox)
    return build_for(settings, outbox.kind, subscriber, **extra)


#: fields a store event may leave out (the templates test them; any other missing one is an error)
STORE_OPTIONAL = ("first_name", "order_url", "tracking_url", "reason", "alternatives", "url")


def store_context(settings: Settings, event: StoreEvent, invite_url: str | None = None) -> dict:
    """What a store mail template sees (docs/store-mail.md: editing the files).

    ``invite_url``: a first order's one invitation to join the newsletter (order_placed only).
    """
    return {
        "invite_url": invite_url,
        "max_age_days": settings.confirm_max_age_days,
        "store": settings.store_name,
        "postal_address": settings.postal_address,
        "contact": parseaddr(settings.from_)[1] or settings.from_,  # replies reach the store too
        "event": {**dict.fromkeys(STORE_OPTIONAL), **event.payload},
    }


def build_store_mail(settings: Settings, kind: OutboxKind, event: StoreEvent, invite_url: str | None = None):
    """Store mail: the event's details, to the event's address; no marketing links in it."""
    context = store_context(settings, event, invite_url)
    subject, text, html = render_transactional(kind.value, settings, settings.default_language, **context)
    sender = from_header(settings)
    return build_message(sender=sender, to=event.email, subject=subject, text=text, html=html)


def store_address_suppressed(session: Session, email: str) -> bool:
    """Store mail reaches people whatever their marketing choices, never a bounced or complaining address."""
    reason = session.scalar(select(Suppression.reason).where(Suppression.email_hash == address_hash(email)))
    return reason in (SuppressionReason.BOUNCED, SuppressionReason.COMPLAINED)


def store_addresses_suppressed(session: Session, emails: set[str]) -> set[str]:
    """Which of these (normalized) addresses ``store_address_suppressed`` refuses, in one query."""
    by_hash = {address_hash(email): email for email in emails}
    return {
        by_hash[email_hash]
        for email_hash in session.scalars(
            select(Suppression.email_hash).where(
                Suppression.email_hash.in_(by_hash),
                Suppression.reason.in_((SuppressionReason.BOUNCED, SuppressionReason.COMPLAINED)),
            )
        )
    }


def invitation_context(session: Session, outbox_id: int) -> dict[str, str]:
    """What a partner invitation says about where the consent came from."""
    invitation = session.get(PartnerInvitation, outbox_id)
    return {"partner": invitation.partner_name if invitation else "a partner store"}


def welcome_refusal(session: Session, subscriber: Subscriber | None) -> str | None:
    """Why a welcome must not go out now (checked when sending: a bounce may have come since)."""
    if subscriber is None or subscriber.status != SubscriberStatus.ACTIVE:
        return "not sent: no longer subscribed"
    blocked = suppression.find(session, subscriber.email_hash)
    if blocked is not None:
        return f"not sent: suppressed ({blocked.reason.value})"
    return None


def welcome_context(session: Session, subscriber: Subscriber, language: str | None = None) -> dict:
    """What the welcome says: the topics the person gets (as named on the form, in ``language``)
    and how often."""
    active = {s.topic_id for s in subscriber.subscriptions if s.status == SubscriptionStatus.ACTIVE}
    topics = [
        t.name_in(language)
        for t in session.scalars(
            select(Topic).where(Topic.retired_at.is_(None)).order_by(Topic.position, Topic.id)
        )
        if t.id in active
    ]
    return {"topics": topics, "frequency": subscriber.frequency.value}


def give_up(outbox: OutboxEmail, reason: str) -> None:
    """Stop trying this email: failed, with the reason (one warning line in the worker's log)."""
    outbox.failed_at = clock.now()
    outbox.claimed_at = None
    outbox.last_error = reason[:1000]
    log.warning("outbox %s (%s) failed: %s", outbox.id, outbox.kind.value, reason)


def build_for(
    settings: Settings, kind: OutboxKind, subscriber: Subscriber, request_id: int | None = None, **extra
):
    context = {
        "store": settings.store_name,
        "postal_address": settings.postal_address,
        "first_name": subscriber.first_name,
        **extra,
    }
    if kind in (OutboxKind.CONFIRM, OutboxKind.PARTNER_INVITE):
        context["confirm_url"] = links.confirm_url(settings, subscriber, request_id)
        context["max_age_days"] = settings.confirm_max_age_days
    else:
        context["preferences_url"] = links.preferences_url(settings, subscriber)
        context["unsubscribe_url"] = links.unsubscribe_url(settings, subscriber)
    language = resolve(subscriber.language, settings.default_language)
    subject, text, html = render_transactional(kind.value, settings, language, **context)
    sender = from_header(settings)
    return build_message(sender=sender, to=subscriber.email, subject=subject, text=text, html=html)


def unsent_outbox(session: Session, older_than: timedelta, limit: int = 1000) -> list[tuple[int, str | None]]:
    """(id, job_id) of rows no worker holds that may still be tried: never enqueued (Redis was
    down), abandoned, or carried by a job that may still be live (the caller asks RQ)."""
    now = clock.now()
    return [
        (row.id, row.job_id)
        for row in session.execute(
            select(OutboxEmail.id, OutboxEmail.job_id)
            .where(
                OutboxEmail.sent_at.is_(None),
                OutboxEmail.failed_at.is_(None),
                OutboxEmail.created_at <= now - older_than,
                or_(OutboxEmail.not_before.is_(None), OutboxEmail.not_before <= now),
                or_(OutboxEmail.claimed_at.is_(None), OutboxEmail.claimed_at < now - STALE_CLAIM),
                OutboxEmail.attempts < MAX_ATTEMPTS,
            )
            .order_by(OutboxEmail.id)
            .limit(limit)
        )
    ]


def set_job(session: Session, outbox_ids: list[int], job_id: str | None) -> None:
    """Record the RQ job that carries these rows (None: each row's own ``outbox-<id>``)."""
    session.execute(update(OutboxEmail).where(OutboxEmail.id.in_(outbox_ids)).values(job_id=job_id))


def give_up_exhausted(session: Session) -> int:
    """Give up rows out of attempts that nobody holds (their last worker died); returns how many."""
    now = clock.now()
    rows = session.scalars(
        select(OutboxEmail).where(
            OutboxEmail.sent_at.is_(None),
            OutboxEmail.failed_at.is_(None),
            OutboxEmail.attempts >= MAX_ATTEMPTS,
            or_(OutboxEmail.claimed_at.is_(None), OutboxEmail.claimed_at < now - STALE_CLAIM),
        )
    ).all()
    for outbox in rows:
        give_up(outbox, f"gave up after {outbox.attempts} attempts: {outbox.last_error or 'no answer'}")
    return len(rows)
