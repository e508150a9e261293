"""Scheduled campaigns, their waves, and the delivery ledger (one row per campaign x subscriber)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.core import clock
from newsletter.core.db import Base, enum_type


class CampaignStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  #: frozen, waiting for its first wave
    SENDING = "sending"  #: at least one wave started
    PAUSED = "paused"  #: by an operator, or by itself after repeated send errors (see pause_reason)
    CANCELLED = "cancelled"
    DONE = "done"  #: every wave finished: nothing queued, sending or deferred


class WaveStatus(enum.StrEnum):
    WAITING = "waiting"  #: before send_at
    SENDING = "sending"  #: audience frozen into the ledger, batches out
    DONE = "done"


class DeliveryState(enum.StrEnum):
    QUEUED = "queued"  #: selected, waiting for a batch job
    CLAIMED = "claimed"  #: a batch took it and is deciding caps: nothing of it has been sent
    SENDING = "sending"  #: a batch decided to send it and holds its cap place: goes out in id order
    SENT = "sent"  #: the relay answered 250
    DEFERRED = "deferred"  #: a cap or quiet hours: waits until send_after
    SKIPPED = "skipped"  #: will not be sent: reason says why (unsubscribed, capped past deadline, ...)
    FAILED = "failed"  #: the relay refused it for good: reason has the SMTP answer
    UNCERTAIN = "uncertain"  #: a worker died inside the SMTP transaction: maybe delivered once


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: the folder name under campaigns/
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: topic a recipient must have chosen
    topic_slug: Mapped[str] = mapped_column(String(50))
    status: Mapped[CampaignStatus] = mapped_column(
        enum_type(CampaignStatus, 20), default=CampaignStatus.SCHEDULED
    )
    pause_reason: Mapped[str | None] = mapped_column(Text)
    #: sha256 of the source files at scheduling time; editing them needs a reschedule
    content_hash: Mapped[str] = mapped_column(String(64))
    #: the compiled email, frozen at scheduling (subject, html, text, headers...)
    compiled: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: after this nobody is sent the campaign (early access: the sale's public_at)
    deadline: Mapped[datetime | None]
    sale_url: Mapped[str | None] = mapped_column(String(500))
    public_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    scheduled_at: Mapped[datetime] = mapped_column(default=clock.now)
    #: consecutive send errors; the campaign pauses itself past a threshold
    error_streak: Mapped[int] = mapped_column(default=0)

    waves: Mapped[list[Wave]] = relationship(
        back_populates="campaign", order_by="Wave.position", cascade="all, delete-orphan"
    )


class Wave(Base):
    __tablename__ = "waves"
    __table_args__ = (UniqueConstraint("campaign_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    position: Mapped[int]
    name: Mapped[str] = mapped_column(String(100))
    #: the audience expression as written in campaign.toml
    audience: Mapped[str] = mapped_column(Text)
    send_at: Mapped[datetime]
    status: Mapped[WaveStatus] = mapped_column(enum_type(WaveStatus, 20), default=WaveStatus.WAITING)
    #: when the audience was frozen into the delivery ledger
    started_at: Mapped[datetime | None]

    campaign: Mapped[Campaign] = relationship(back_populates="waves")


class Delivery(Base):
    """The ledger: exactly one row per (campaign, subscriber), whatever happens."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        Index("ix_deliveries_work", "campaign_id", "state", "send_after"),
        Index("ix_deliveries_history", "subscriber_id", "sent_at"),
        # a provider's bounce or complaint names the message by its Message-ID
        Index("ix_deliveries_message_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    wave_id: Mapped[int] = mapped_column(ForeignKey("waves.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    state: Mapped[DeliveryState] = mapped_column(enum_type(DeliveryState, 20), default=DeliveryState.QUEUED)
    #: why it was deferred, skipped or failed
    reason: Mapped[str | None] = mapped_column(String(300))
    #: deferred rows wait until then (UTC)
    send_after: Mapped[datetime | None]
    #: when a worker took it, and the batch claim it belongs to (stale claims are swept back)
    claimed_at: Mapped[datetime | None]
    claim_token: Mapped[str | None] = mapped_column(String(36))
    sent_at: Mapped[datetime | None]
    message_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(default=0)
    #: first use of the personal early-access link
    redeemed_at: Mapped[datetime | None]
    #: summaries of the feedback (models.feedback.DeliveryEvent has every signal)
    bounced_at: Mapped[datetime | None]
    #: "hard" or "soft": the worst bounce seen for this message
    bounce_kind: Mapped[str | None] = mapped_column(String(10))
    complained_at: Mapped[datetime | None]
    first_click_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    #: the personal reward code this message carries ([reward] in campaign.toml), set before sending
    reward_code: Mapped[str | None] = mapped_column(String(200))
    #: the store reported the reward code used (POST /api/codes/redeemed; pool codes: reward_codes too)
    reward_redeemed_at: Mapped[datetime | None]
    #: the language of the email sent (the campaign's variant for the person; set with sent_at)
    language: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)


class RewardCode(Base):
    """One code of a pool the store made (``newsletter codes import``), handed out once.

    ``delivery_id`` is unique: one code per message, and a code never goes to two messages.
    """

    __tablename__ = "reward_codes"
    __table_args__ = (UniqueConstraint("pool", "code"), Index("ix_reward_codes_free", "pool", "delivery_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    pool: Mapped[str] = mapped_column(String(100))
    code: Mapped[str] = mapped_column(String(200))
    loaded_at: Mapped[datetime] = mapped_column(default=clock.now)
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), unique=True
    )
    assigned_at: Mapped[datetime | None]
    #: the store reported the code used (POST /api/codes/redeemed)
    redeemed_at: Mapped[datetime | None]


class CampaignEvent(Base):
    """One change of a campaign's status: from, to, why and who (append-only, like consent events).

    Written by ``campaigns.state.transition`` in the same transaction as the change. Kept by slug
    too: a reschedule replaces the campaign row, and the log of the old one should survive it.
    """

    __tablename__ = "campaign_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL"), index=True
    )
    campaign_slug: Mapped[str] = mapped_column(String(100), index=True)
    #: None: the campaign was scheduled (created)
    from_status: Mapped[CampaignStatus | None] = mapped_column(enum_type(CampaignStatus, 20))
    to_status: Mapped[CampaignStatus] = mapped_column(enum_type(CampaignStatus, 20))
    reason: Mapped[str] = mapped_column(Text)
    #: who: ``operator`` (the CLI), ``tick``, ``worker`` (a batch pausing on errors) ...
    actor: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(default=clock.now)


class CampaignLogIsAppendOnly(Exception):
    """A campaign event was about to be changed or deleted through the ORM."""


@event.listens_for(CampaignEvent, "before_update")
@event.listens_for(CampaignEvent, "before_delete")
def _refuse_changes(_mapper, _connection, target: CampaignEvent) -> None:
    raise CampaignLogIsAppendOnly(f"campaign event {target.id} cannot be changed or deleted")
