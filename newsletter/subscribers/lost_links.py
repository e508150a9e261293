"""The "send me my links" page: someone who lost every email asks for their preference centre's link.

The page answers the same whatever the address's state, so it tells a stranger nothing about who
is on the list; only an address we may write to gets the email: a pending, active or unsubscribed
subscriber whose address is not suppressed for a bounce, a complaint or by an operator. The email
goes through the transactional outbox, and counts against the mailbox's daily cap like a
confirmation (``limits.check_signup``), so the form cannot be used to flood someone's inbox.
"""

from __future__ import annotations

import logging

import redis
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.db import on_commit
from newsletter.mail.addresses import mailbox_hash
from newsletter.models import OutboxEmail, OutboxKind, Subscriber, SubscriberStatus, SuppressionReason
from newsletter.subscribers import limits, suppression
from newsletter.subscribers.signup import find_subscriber

log = logging.getLogger(__name__)

#: the states whose subscriber may get their link (an erased row holds no address to write to)
MAILED_STATES = frozenset({SubscriberStatus.PENDING, SubscriberStatus.ACTIVE, SubscriberStatus.UNSUBSCRIBED})
#: suppressions that stop this email too; an unsubscribe's own entry does not (the link is how to come back)
BLOCKING = frozenset({SuppressionReason.BOUNCED, SuppressionReason.COMPLAINED, SuppressionReason.MANUAL})


def refusal(session: Session, subscriber: Subscriber | None) -> str | None:
    """Why this address must not get its link now (checked on asking and again when sending)."""
    if subscriber is None or subscriber.status not in MAILED_STATES:
        return "not sent: no subscriber we may write to"
    entry = suppression.find(session, subscriber.email_hash)
    if entry is not None and entry.reason in BLOCKING:
        return f"not sent: suppressed ({entry.reason.value})"
    return None


def request_links(
    session: Session, conn: redis.Redis, email: str, counted: limits.SignupVerdict, dispatch
) -> int | None:
    """Queue the links email for ``email`` (normalised) if we may write to it; returns the outbox
    row's id, or None. ``counted``: the mailbox's daily cap, taken by ``limits.check_signup``;
    ``dispatch(outbox_id)`` runs after the commit."""
    subscriber = find_subscriber(session, email)
    why = refusal(session, subscriber)
    if why is None and counted.mail is False:
        why = "not sent: daily cap for this mailbox"
    if why is not None:
        if counted.mail:  # nothing goes out: the mailbox's count is given back after the commit
            mailbox = mailbox_hash(email)
            on_commit(session, lambda: limits.give_back_confirmation(conn, mailbox))
        log.info("links request: %s", why)
        return None
    outbox = OutboxEmail(
        kind=OutboxKind.LINKS,
        subscriber_id=subscriber.id,
        created_at=clock.now(),
        attempts=0,
        mailbox_hash=mailbox_hash(email),
    )
    session.add(outbox)
    session.flush()
    outbox_id = outbox.id
    on_commit(session, lambda: dispatch(outbox_id))
    return outbox_id
