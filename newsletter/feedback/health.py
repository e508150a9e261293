"""The list's deliverability over the last days: bounce and complaint rates against the limits that
pause a campaign (feedback/protection.py), for the dashboard's overview.

The rates are the protection rule summed over the campaigns that started sending in the window:
the deliveries with a hard bounce (or a complaint) against the deliveries the relay accepted.
The waves of the window come from a small table; the delivered counts from the delivery tallies the
database keeps (campaigns/tallies.py); the bad signals per campaign on
``ix_delivery_events_campaign`` (campaign_id, kind).
``deliveries.sent_at`` has no index of its own (the sending path writes it once per message), so
sends are not drawn per day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import distinct, func, select, text
from sqlalchemy.orm import Session

from newsletter.campaigns import tallies
from newsletter.campaigns.report import Rate
from newsletter.core.config import Settings
from newsletter.models import (
    Campaign,
    DeliveryEvent,
    SignalKind,
    Wave,
)

BAD = (SignalKind.BOUNCE_HARD, SignalKind.COMPLAINT)


@dataclass(frozen=True)
class CampaignHealth:
    slug: str
    name: str
    delivered: int
    bounce: Rate
    complaint: Rate


@dataclass(frozen=True)
class Health:
    since: datetime
    campaigns: list[CampaignHealth]
    bounce: Rate
    complaint: Rate
    #: per UTC day of the window: hard bounces and complaints received
    days: list[date]
    bounces_per_day: list[int]
    complaints_per_day: list[int]


def _day(value: date | str) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


def health(session: Session, settings: Settings, today: date, days: int = 30) -> Health:
    """Rates of the campaigns whose sending started in the last ``days`` days up to ``today`` (UTC)."""
    start = today - timedelta(days=days - 1)
    since = datetime.combine(start, datetime.min.time())
    campaigns = session.execute(
        select(Campaign.id, Campaign.slug, Campaign.name, Campaign.status)
        .where(Campaign.id.in_(select(Wave.campaign_id).where(Wave.started_at >= since)))
        .order_by(Campaign.id)
    ).all()
    ids = [c.id for c in campaigns]
    delivered = tallies.delivered(session, [c.id for c in campaigns])
    bad: dict[tuple[int, SignalKind], int] = {
        (cid, kind): n
        for cid, kind, n in session.execute(
            select(
                DeliveryEvent.campaign_id, DeliveryEvent.kind, func.count(distinct(DeliveryEvent.delivery_id))
            )
            .where(DeliveryEvent.campaign_id.in_(ids), DeliveryEvent.kind.in_(BAD))
            .group_by(DeliveryEvent.campaign_id, DeliveryEvent.kind)
        ).all()
    }
    rows = []
    for c in campaigns:
        sent = delivered.get(c.id, 0)
        rows.append(
            CampaignHealth(
                c.slug,
                c.name,
                sent,
                Rate(bad.get((c.id, SignalKind.BOUNCE_HARD), 0), sent, settings.max_bounce_rate),
                Rate(bad.get((c.id, SignalKind.COMPLAINT), 0), sent, settings.max_complaint_rate),
            )
        )
    total = sum(r.delivered for r in rows)
    per_day = {
        (_day(d), kind): n
        for d, kind, n in session.execute(
            select(func.date(DeliveryEvent.at), DeliveryEvent.kind, func.count())
            .where(DeliveryEvent.campaign_id.in_(ids), DeliveryEvent.kind.in_(BAD), DeliveryEvent.at >= since)
            .group_by(text("1"), text("2"))
        ).all()
    }
    dates = [start + timedelta(days=i) for i in range(days)]
    return Health(
        since=since,
        campaigns=rows,
        bounce=Rate(sum(r.bounce.count for r in rows), total, settings.max_bounce_rate),
        complaint=Rate(sum(r.complaint.count for r in rows), total, settings.max_complaint_rate),
        days=dates,
        bounces_per_day=[per_day.get((d, SignalKind.BOUNCE_HARD), 0) for d in dates],
        complaints_per_day=[per_day.get((d, SignalKind.COMPLAINT), 0) for d in dates],
    )
