"""The tick's upkeep of the ledger: batches of dead workers, deadlines, and campaigns with work due."""

from __future__ import annotations

from datetime import datetime, timedelta

import redis
from sqlalchemy import String, cast, func, literal, select, update
from sqlalchemy.orm import Session

from newsletter.campaigns import caps
from newsletter.campaigns.ledger import heartbeat_key, message_id_around, progress_key, read_note, ready
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryState

ACCEPTED = "the relay accepted it; marked sent by the sweep after its worker died"
UNCERTAIN = "worker died during the SMTP transaction: maybe delivered once, not retried"


def recover_stale_claims(
    session: Session, conn: redis.Redis, now: datetime, stale_after: int, mark_every: int = 1
) -> dict[str, int]:
    """Hand back the rows of batches whose worker died; mark what the relay already has.

    A batch's rows are ``claimed`` while it decides caps and ``sending`` once those decisions
    are committed, so a worker that died deciding sent nothing: all its rows go back. One that
    died sending left its progress note in Redis naming the row whose SMTP transaction it
    started last: the ``sending`` rows below it were accepted by the relay and wait for their
    group's mark (they become ``sent``), the noted one may have reached the relay (``uncertain``:
    it keeps or gets its cap place, since it counts as a send), the rest never started and go
    back, giving their places back, or the person would be capped by a message never sent.
    Without the note (Redis lost it) the lowest ``mark_every`` + 1 ``sending`` rows are
    uncertain. The places go back before the caller commits, so no new claim can have taken them.
    """
    held = (DeliveryState.CLAIMED, DeliveryState.SENDING)
    claims = session.execute(
        select(Delivery.claim_token, func.min(Delivery.claimed_at))
        .where(Delivery.state.in_(held))
        .group_by(Delivery.claim_token)
    ).all()
    recovered = {"sent": 0, "uncertain": 0, "requeued": 0}
    for token, claimed_at in claims:
        alive = token is not None and conn.exists(heartbeat_key(token))
        if alive or claimed_at > now - timedelta(seconds=stale_after):
            continue
        mine = (Delivery.claim_token == token) if token is not None else Delivery.claim_token.is_(None)
        noted = conn.get(progress_key(token)) if token is not None else None
        sending = select(Delivery.id).where(mine, Delivery.state == DeliveryState.SENDING)
        if noted is not None:
            at, domain = read_note(noted)
            # each accepted row's Message-ID, as its worker made it (message_id_for)
            before, after = message_id_around(token, domain)
            message_id = literal(before) + cast(Delivery.id, String) + literal(after)
            accepted = _settle(
                session,
                sending.where(Delivery.id < at),
                DeliveryState.SENT,
                ACCEPTED,
                claimed_at,
                message_id=message_id,
            )
            uncertain = _settle(
                session, sending.where(Delivery.id == at), DeliveryState.UNCERTAIN, UNCERTAIN, claimed_at
            )
        else:
            accepted = []
            lowest = sending.order_by(Delivery.id).limit(max(1, mark_every) + 1)
            uncertain = _settle(session, lowest, DeliveryState.UNCERTAIN, UNCERTAIN, claimed_at)
        moved = session.execute(
            update(Delivery)
            .where(mine, Delivery.state.in_(held))
            .values(state=DeliveryState.QUEUED, claim_token=None)
            .returning(Delivery.id, Delivery.subscriber_id)
            .execution_options(synchronize_session=False)
        ).all()
        for id_, subscriber_id in (*accepted, *uncertain):
            caps.hold(conn, subscriber_id, caps.member_for(id_), claimed_at)
        caps.release_many(conn, ((subscriber_id, caps.member_for(id_)) for id_, subscriber_id in moved))
        if token is not None:
            conn.delete(progress_key(token))
        recovered["sent"] += len(accepted)
        recovered["uncertain"] += len(uncertain)
        recovered["requeued"] += len(moved)
    return recovered


def _settle(session: Session, rows, state: DeliveryState, reason: str, at: datetime, **values) -> list:
    """Set ``state``, ``reason``, sent at ``at`` (and ``values``) on the rows ``rows`` selects;
    their (id, subscriber)."""
    return session.execute(
        update(Delivery)
        .where(Delivery.id.in_(rows))
        .values(state=state, sent_at=at, reason=reason, **values)
        .returning(Delivery.id, Delivery.subscriber_id)
        .execution_options(synchronize_session=False)
    ).all()


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
