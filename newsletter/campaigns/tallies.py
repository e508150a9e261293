"""A campaign's counts read from the tallies the database keeps (models/tallies.py), not recounted.

Every read sums the campaign's signed rows in one indexed statement: exact at that moment, with
no refresh point to wait for (the triggers write in the transaction of the change). :func:`fold`
keeps the sums short: it replaces a campaign's rows by one per group; the worker's maintenance
(``worker.py``) folds the campaigns that changed since the last fold.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from newsletter.core.db import session_scope
from newsletter.core.runtime import get_runtime
from newsletter.models import CampaignHourTally, DeliveryState, DeliveryTally

log = logging.getLogger(__name__)

MEASURES = (
    "n",
    "hard",
    "soft",
    "complained",
    "unsubscribed",
    "opened",
    "clicked",
    "redeemed",
    "codes",
    "codes_redeemed",
)
_GROUP = ("campaign_id", "wave_id", "state", "reason")
#: the last tally id the maintenance folded past (Redis): campaigns with rows after it fold next
FOLDED_KEY = "nl:tallies:folded"
_TABLES = (DeliveryTally, CampaignHourTally)
_FOLD_LOCK = 7_320_415  # PostgreSQL advisory lock: one fold at a time


def groups(session: Session, campaign_id: int) -> list[Any]:
    """The campaign's deliveries by wave, state and reason, as ``report.delivery_groups`` counts them."""
    t = DeliveryTally
    sums = [func.sum(getattr(t, name)).label(name) for name in MEASURES]
    return session.execute(
        select(t.wave_id, t.state, t.reason, *sums)
        .where(t.campaign_id == campaign_id)
        .group_by(t.wave_id, t.state, t.reason)
        .having(func.sum(t.n) != 0)
    ).all()


def delivered(session: Session, campaign_ids: list[int]) -> dict[int, int]:
    """Messages the relay accepted (state ``sent``), per campaign, from the tallies."""
    t = DeliveryTally
    return {
        campaign_id: int(n)
        for campaign_id, n in session.execute(
            select(t.campaign_id, func.sum(t.n))
            .where(t.campaign_id.in_(campaign_ids), t.state == DeliveryState.SENT)
            .group_by(t.campaign_id)
        )
    }


def reward_codes(rows: list[Any]) -> dict[str, int]:
    """Reward codes assigned and redeemed, from :func:`groups`' rows."""
    return {"assigned": sum(r.codes for r in rows), "redeemed": sum(r.codes_redeemed for r in rows)}


def link_counts(session: Session, campaign_id: int) -> list[tuple[int | None, str, int]]:
    """(link, "click" or "scanner", events) of the campaign."""
    t = CampaignHourTally
    return [
        (link, metric, int(n))
        for link, metric, n in session.execute(
            select(t.link, t.metric, func.sum(t.n))
            .where(t.campaign_id == campaign_id, t.metric.in_(("click", "scanner")))
            .group_by(t.link, t.metric)
            .having(func.sum(t.n) != 0)
        )
    ]


def hours(session: Session, campaign_id: int) -> dict[str, dict[datetime, int]]:
    """metric -> {hour: count}: sends, feedback, first clicks, click events, redemptions per hour."""
    t = CampaignHourTally
    found: dict[str, dict[datetime, int]] = defaultdict(dict)
    for metric, hour, n in session.execute(
        select(t.metric, t.hour, func.sum(t.n))
        .where(t.campaign_id == campaign_id)
        .group_by(t.metric, t.hour)
        .having(func.sum(t.n) != 0)
    ):
        found[metric][hour] = int(n)
    return dict(found)


def fold_campaign(session: Session, campaign_id: int) -> None:
    """Replace the campaign's tally rows by their sums, one row per group (the caller commits).

    DELETE ... RETURNING takes exactly the rows it removes, so a change committed meanwhile is
    never lost: it is either among them or stays as a row of its own.
    """
    for model, key, measures in (
        (DeliveryTally, _GROUP, MEASURES),
        (CampaignHourTally, ("campaign_id", "hour", "metric", "link"), ("n",)),
    ):
        columns = [getattr(model, c) for c in (*key, *measures)]
        sums: dict[tuple, list[int]] = {}
        for row in session.execute(delete(model).where(model.campaign_id == campaign_id).returning(*columns)):
            total = sums.setdefault(tuple(row[: len(key)]), [0] * len(measures))
            for i, value in enumerate(row[len(key) :]):
                total[i] += value
        values = [
            {**dict(zip(key, group, strict=True)), **dict(zip(measures, total, strict=True))}
            for group, total in sums.items()
            if any(total)
        ]
        if values:
            session.execute(insert(model), values)


def fold(session: Session, since: int = 0) -> int:
    """Fold every campaign with tally rows after id SINCE; returns the id to start from next time.

    A change committed below the id returned (PostgreSQL hands ids out before the commit, and
    writers may commit while this folds) stays a row of its own until its campaign changes
    again: the sums stay exact, only a little longer.
    """
    campaigns = set()
    for table in _TABLES:
        campaigns.update(session.scalars(select(table.campaign_id).where(table.id > since).distinct()))
    session.commit()  # each fold in a transaction that starts by writing (SQLite: no stale snapshot)
    for campaign_id in sorted(campaigns):
        if session.bind.dialect.name == "postgresql" and not session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _FOLD_LOCK}
        ):
            session.rollback()
            return since  # another worker is folding
        fold_campaign(session, campaign_id)
        session.commit()
    # past the rows the folds wrote (a change that slipped in between waits for its campaign's next one)
    last = max([since] + [session.scalar(select(func.max(t.id))) or 0 for t in _TABLES])
    session.commit()
    return last


def fold_tallies() -> int:
    """The worker's maintenance: fold the campaigns whose tallies grew since the last run."""
    runtime = get_runtime()
    since = int(runtime.redis.get(FOLDED_KEY) or 0)
    with session_scope(runtime.sessions) as session:
        last = fold(session, since)
    runtime.redis.set(FOLDED_KEY, last)
    return last
