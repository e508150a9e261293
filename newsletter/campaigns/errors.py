"""What a failed message does: to its row (retry, failed, uncertain, bounce) and to its campaign.

Consecutive errors are counted in the campaign's row, shared by every slice and worker; past
``PAUSE_AFTER_ERRORS`` the campaign pauses itself through the state machine.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.campaigns import caps, state
from newsletter.campaigns.ledger import mark
from newsletter.core import clock
from newsletter.mail.transports import TransportError
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryState, SuppressionReason
from newsletter.subscribers import suppression

log = logging.getLogger(__name__)

#: SMTP answers at RCPT that mean the address does not exist: a hard bounce.
HARD_BOUNCES = {550, 551, 553}


def on_error(session, conn, settings, campaign, recipient, exc: TransportError, report) -> bool:
    """Record one failed attempt; True if the campaign has paused itself."""
    if exc.uncertain:
        # Maybe delivered: keep the cap place, never retry (a retry could be a second copy).
        mark(
            session,
            [recipient.delivery_id],
            state=DeliveryState.UNCERTAIN,
            sent_at=clock.now(),
            reason=str(exc)[:300],
        )
        report.failed += 1
        return False
    caps.release(conn, recipient.subscriber_id, caps.member_for(recipient.delivery_id))
    if exc.temporary:
        backoff = min(3600, 60 * 2 ** min(6, _attempts(session, recipient.delivery_id)))
        mark(
            session,
            [recipient.delivery_id],
            state=DeliveryState.DEFERRED,
            send_after=clock.now() + timedelta(seconds=backoff),
            reason=f"retry: {exc}"[:300],
        )
        report.retried += 1
    else:
        mark(session, [recipient.delivery_id], state=DeliveryState.FAILED, reason=str(exc)[:300])
        report.failed += 1
        if exc.code in HARD_BOUNCES:
            suppression.suppress(
                session, recipient.email_hash, SuppressionReason.BOUNCED, f"smtp:{exc.code}", str(exc)[:300]
            )
    return count_error(session, settings, campaign, str(exc), report)


def on_bad_message(session, conn, settings, campaign, recipient, reason: str, report) -> bool:
    """One recipient's message could not be built or handed over: that row fails, the slice goes on.

    Nothing reached the relay, so the cap place goes back. The error counts towards the
    campaign's streak like a relay's refusal: one bad row is forgotten at the next success,
    but a run of them is a fault of the campaign or the system, and pausing keeps the rest of
    the list from failing for good.
    """
    caps.release(conn, recipient.subscriber_id, caps.member_for(recipient.delivery_id))
    mark(session, [recipient.delivery_id], state=DeliveryState.FAILED, reason=reason[:300])
    report.failed += 1
    log.warning("campaign %s, delivery %s failed: %s", campaign.slug, recipient.delivery_id, reason)
    return count_error(session, settings, campaign, reason, report)


def count_error(session, settings, campaign, last: str, report) -> bool:
    """One more consecutive error for the campaign; True if it is paused (now or already)."""
    # One counter in the campaign's row, shared by every thread and worker sending it.
    streak, status = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign.id)
        .values(error_streak=Campaign.error_streak + 1)
        .returning(Campaign.error_streak, Campaign.status)
    ).one()
    if status == CampaignStatus.PAUSED:
        report.stopped = "campaign paused"
        return True
    if streak >= settings.pause_after_errors:
        reason = f"paused itself after {streak} consecutive send errors; last: {last}"[:1000]
        current = state.pause_itself(
            session, campaign, reason, actor="worker", only_from=(CampaignStatus.SENDING,)
        )
        # paused or cancelled by someone else a moment ago: that decision stands; stop anyway
        report.stopped = f"campaign {current.value}" if current else reason
        return True
    return False


def _attempts(session: Session, delivery_id: int) -> int:
    return session.scalar(select(Delivery.attempts).where(Delivery.id == delivery_id)) or 0
