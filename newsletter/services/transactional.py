"""Delivery of transactional mail from the outbox: claim, build, send, mark sent."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from newsletter import clock
from newsletter.mail.message import build_message
from newsletter.mail.transports import Transport
from newsletter.models import OutboxEmail, OutboxKind, Subscriber
from newsletter.services import links
from newsletter.services.rendering import render_transactional
from newsletter.services.signup import request_for_outbox

#: A claim older than this belongs to a worker that died; the sweep hands it out again.
STALE_CLAIM = timedelta(minutes=10)


def claim(session: Session, outbox_id: int) -> bool:
    """Take the row for this worker; False if it is sent or another worker holds it."""
    now = clock.now()
    result = session.execute(
        update(OutboxEmail)
        .where(
            OutboxEmail.id == outbox_id,
            OutboxEmail.sent_at.is_(None),
            or_(OutboxEmail.claimed_at.is_(None), OutboxEmail.claimed_at < now - STALE_CLAIM),
        )
        .values(claimed_at=now, attempts=OutboxEmail.attempts + 1)
    )
    return result.rowcount == 1


def deliver(session: Session, config: dict, transport: Transport, outbox_id: int) -> str | None:
    """Send one claimed outbox email and mark it sent; returns its Message-ID."""
    outbox = session.get(OutboxEmail, outbox_id)
    if outbox is None or outbox.sent_at is not None:
        return None
    subscriber = session.get(Subscriber, outbox.subscriber_id)
    extra = {}
    if outbox.kind == OutboxKind.PARTNER_INVITE:
        from newsletter.partners.invitations import invitation_context

        extra = invitation_context(session, outbox.id)
    if outbox.kind in (OutboxKind.CONFIRM, OutboxKind.PARTNER_INVITE):
        extra["request_id"] = request_for_outbox(session, outbox)
    message = build_for(config, outbox.kind, subscriber, **extra)
    try:
        transport.send(message)
    except Exception as exc:
        outbox.claimed_at = None  # let the retry (or the sweep) take it again
        outbox.last_error = str(exc)[:1000]
        session.commit()
        raise
    outbox.sent_at = clock.now()
    outbox.message_id = message["Message-ID"]
    return outbox.message_id


def build_for(config: dict, kind: OutboxKind, subscriber: Subscriber, request_id: int | None = None, **extra):
    context = {
        "store": config["STORE_NAME"],
        "postal_address": config["POSTAL_ADDRESS"],
        "first_name": subscriber.first_name,
        **extra,
    }
    if kind in (OutboxKind.CONFIRM, OutboxKind.PARTNER_INVITE):
        context["confirm_url"] = links.confirm_url(config, subscriber, request_id)
        context["max_age_days"] = config["CONFIRM_MAX_AGE_DAYS"]
    else:
        context["preferences_url"] = links.preferences_url(config, subscriber)
        context["unsubscribe_url"] = links.unsubscribe_url(config, subscriber)
    subject, text, html = render_transactional(kind.value, **context)
    return build_message(sender=config["FROM"], to=subscriber.email, subject=subject, text=text, html=html)


def unsent_outbox_ids(session: Session, older_than: timedelta, limit: int = 1000) -> list[int]:
    """Outbox rows nobody is working on: never enqueued (Redis was down) or abandoned."""
    now = clock.now()
    return list(
        session.scalars(
            select(OutboxEmail.id)
            .where(
                OutboxEmail.sent_at.is_(None),
                OutboxEmail.created_at <= now - older_than,
                or_(OutboxEmail.claimed_at.is_(None), OutboxEmail.claimed_at < now - STALE_CLAIM),
                OutboxEmail.attempts < 10,
            )
            .order_by(OutboxEmail.id)
            .limit(limit)
        )
    )
