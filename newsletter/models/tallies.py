"""A campaign's numbers kept up to date by the database itself, so that its report reads a few rows.

Triggers on ``deliveries`` and ``delivery_events`` (migration ``0015_delivery_tallies``) append one
signed row per change: -1 for a row's old group, +1 for its new one (PostgreSQL: one aggregated
row per statement and group, from the statement's transition tables). Appending never waits on a
lock, so the sending workers do not queue behind one counter row. The sum of a campaign's rows is
its exact count at any moment, in the same transaction as the change; ``campaigns/tallies.py``
folds the rows into one per group in the worker's tick so that the sum stays short.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core.db import Base


class DeliveryTally(Base):
    """Signed counts of deliveries per (campaign, wave, state, reason), with the feedback columns."""

    __tablename__ = "delivery_tallies"
    __table_args__ = (Index("ix_delivery_tallies_campaign", "campaign_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: no foreign keys: a campaign's deletion is counted here as well (its rows sum to nothing)
    campaign_id: Mapped[int]
    wave_id: Mapped[int]
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(300))
    n: Mapped[int]
    hard: Mapped[int]
    soft: Mapped[int]
    complained: Mapped[int]
    unsubscribed: Mapped[int]
    opened: Mapped[int]
    clicked: Mapped[int]
    redeemed: Mapped[int]
    #: reward codes assigned to these deliveries, and redeemed at the store
    codes: Mapped[int]
    codes_redeemed: Mapped[int]


class CampaignHourTally(Base):
    """Signed counts per (campaign, hour, metric, link): sends, feedback and clicks over time.

    Metrics from the deliveries' timestamps: sent, bounced, complained, unsubscribed, clicked
    (first clicks), redeemed (early access), code_redeemed; from the events: click, scanner
    (with the link).
    """

    __tablename__ = "campaign_hour_tallies"
    __table_args__ = (Index("ix_campaign_hour_tallies_campaign", "campaign_id", "metric"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int]
    #: the hour the thing happened, truncated (UTC)
    hour: Mapped[datetime]
    metric: Mapped[str] = mapped_column(String(20))
    link: Mapped[int | None]
    n: Mapped[int]
