"""The tick's upkeep of the ledger: batches of dead workers, deadlines, and campaigns with work due."""

from __future__ import annotations

from datetime import datetime, timedelta

import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from newsletter.campaigns import caps
from newsletter.campaigns.ledger import ready
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryState


def recover_stale_claims(
    session: Session, conn: redis.Redis, now: datetime, stale_after: int
) -> dict[str, int]:
    """Hand back the rows of batches whose worker died; the lowest ``sending`` row is uncertain.

    A batch's rows are ``claimed`` while it decides caps and ``sending`` once those decisions
    are committed, so a worker that died deciding sent nothing: all its rows go back. One that
    died sending may have handed its lowest ``sending`` row to the relay unmarked: that row is
    uncertain and keeps (or gets) its cap place, since it counts as a send. Every row handed
    back gives its place back, or the person would be capped by a message never sent. The
    places go back before the caller commits, so no new claim can have taken them yet.
    """
    held = (DeliveryState.CLAIMED, DeliveryState.SENDING)
    claims = session.execute(
        select(Delivery.claim_token, func.min(Delivery.claimed_at))
        .where(Delivery.state.in_(held))
        .group_by(Delivery.claim_token)
    ).all()
    recovered = {"uncertain": 0, "requeued": 0}
    for token, claimed_at in claims:
        alive = token is not None and conn.exists(f"nl:claim:{token}")
        if alive or claimed_at > now - timedelta(seconds=stale_after):
            continue
        mine = (Delivery.claim_token == token) if token is not None else Delivery.claim_token.is_(None)
        uncertain = session.execute(
            update(Delivery)
            .where(
                Delivery.id
                == select(func.min(Delivery.id))
                .where(mine, Delivery.state == DeliveryState.SENDING)
                .scalar_subquery()
            )
            .values(
                state=DeliveryState.UNCERTAIN,
                sent_at=claimed_at,
                reason="worker died during the SMTP transaction: maybe delivered once, not retried",
            )
            .returning(Delivery.id, Delivery.subscriber_id)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        moved = session.execute(
            update(Delivery)
            .where(mine, Delivery.state.in_(held))
            .values(state=DeliveryState.QUEUED, claim_token=None)
            .returning(Delivery.id, Delivery.subscriber_id)
            .execution_options(synchronize_session=False)
        ).all()
        if uncertain is not None:
            caps.hold(conn, uncertain.subscriber_id, caps.member_for(uncertain.id), claimed_at)
            recovered["uncertain"] += 1
        caps.release_many(conn, ((subscriber_id, caps.member_for(id_)) for id_, subscriber_id in moved))
        recovered["requeued"] += len(moved)
    return recovered


def due_campaigns(session: Session, now: datetime) -> list[int]:
    """Campaigns with rows ready to send now (queued, or deferred and due)."""
    return list(
        session.scalars(
            select(Delivery.campaign_id)
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Campaign.status == CampaignStatus.SENDING, ready(now))
            .distinct()
        )
    )


def skip_past_deadline(session: Session, now: datetime) -> int:
    """Deferred rows whose campaign's deadline has passed are skipped, with the reason kept."""
    expired = select(Campaign.id).where(Campaign.deadline.is_not(None), Campaign.deadline <= now)
    return session.execute(
        update(Delivery)
        .where(
            Delivery.state.in_([DeliveryState.DEFERRED, DeliveryState.QUEUED]),
            Delivery.campaign_id.in_(expired),
        )
        .values(state=DeliveryState.SKIPPED, reason="deadline passed before it could be sent")
        .execution_options(synchronize_session=False)
    ).rowcount
