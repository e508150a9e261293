"""``campaign plan``: what each wave would do at its start, computed from the ledger, sending nothing.

The plan applies the same rules as a send (suppression, pause, quiet hours, caps, deadline)
to every person a wave would select, at the wave's ``send_at``, against the send history
in the delivery ledger. Earlier waves of the plan count as sent, so a person in the VIP
wave is neither in the public wave nor under a cap the VIP email used up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.campaigns import caps, rewards
from newsletter.campaigns.waves import eligible_subscribers
from newsletter.core.config import Settings
from newsletter.models import Delivery, DeliveryState, Frequency, Subscriber, Suppression


@dataclass(frozen=True)
class PlannedWave:
    """What the planner needs of a wave, scheduled or still a file."""

    name: str
    audience: str
    send_at: datetime


@dataclass
class WavePlan:
    name: str
    send_at: datetime
    audience: int = 0  #: matching confirmed subscribers of the topic, not in an earlier wave
    suppressed: int = 0  #: on the suppression list: skipped
    now: int = 0  #: sent at once when the wave starts
    deferred: dict[str, int] = field(default_factory=dict)  #: reason -> count (sent later, in time)
    skipped: dict[str, int] = field(default_factory=dict)  #: reason -> count (the deadline comes first)


def plan(
    session: Session,
    settings: Settings,
    topic_slug: str,
    waves: Sequence[PlannedWave],
    deadline: datetime | None,
    campaign_id: int | None = None,
) -> list[WavePlan]:
    policy = caps.Policy.from_settings(settings)
    longest = max([w for _, w in policy.rules] + [30 * 86400])
    taken: set[int] = set()
    extra_sends: dict[int, list[datetime]] = {}
    result = []
    for wave in waves:
        ids = set(
            session.scalars(eligible_subscribers(topic_slug, wave.audience, wave.send_at, campaign_id)).all()
        )
        ids -= taken
        taken |= ids
        report = WavePlan(wave.name, wave.send_at, audience=len(ids))
        people = _people(session, ids)
        history = _history(session, ids, wave.send_at - timedelta(seconds=longest))
        for subscriber_id, _hash, frequency, time_zone, paused_until, suppressed in people:
            if suppressed:
                report.suppressed += 1
                continue
            at = wave.send_at
            why = "frequency cap"
            if paused_until and paused_until > at:
                at, why = paused_until, "paused"
            quiet = caps.outside_quiet_hours(at, time_zone, policy.quiet_hours)
            if quiet > at:
                at, why = quiet, ("quiet hours" if why == "frequency cap" else why)
            sends = history.get(subscriber_id, []) + extra_sends.get(subscriber_id, [])
            rules = policy.rules_for(Frequency(frequency))
            capped = caps.earliest_by_rules(sends, rules, at)
            if capped > at:
                at, why = caps.outside_quiet_hours(capped, time_zone, policy.quiet_hours), "frequency cap"
            if at <= wave.send_at:
                report.now += 1
            elif deadline is not None and at >= deadline:
                report.skipped[why] = report.skipped.get(why, 0) + 1
                continue
            else:
                report.deferred[why] = report.deferred.get(why, 0) + 1
            extra_sends.setdefault(subscriber_id, []).append(at)
        result.append(report)
    return result


#: rows that will still be sent (or tried): each needs a code when its batch decides
_STILL_TO_SEND = (DeliveryState.QUEUED, DeliveryState.CLAIMED, DeliveryState.SENDING, DeliveryState.DEFERRED)


@dataclass(frozen=True)
class CodeNeeds:
    """Reward codes the rest of a campaign needs against those its pool has free."""

    pool: str | None  #: None: generated codes, which never run out
    needed: int  #: the plan's sends now and deferred, plus rows of started waves holding no code yet
    available: int | None  #: free codes in the pool (None for generated codes)

    @property
    def short(self) -> int:
        return max(0, self.needed - self.available) if self.available is not None else 0

    def to_json(self) -> dict:
        return {"pool": self.pool, "needed": self.needed, "available": self.available, "short": self.short}


def code_needs(
    session: Session, pool: str | None, plans: Sequence[WavePlan], campaign_id: int | None
) -> CodeNeeds:
    """Codes needed by the waves still to start and by rows already queued without one
    (a campaign a dry pool paused); the pool's free codes."""
    needed = sum(p.now + sum(p.deferred.values()) for p in plans)
    if campaign_id is not None:
        needed += session.scalar(
            select(func.count()).where(
                Delivery.campaign_id == campaign_id,
                Delivery.state.in_(_STILL_TO_SEND),
                Delivery.reward_code.is_(None),
            )
        )
    return CodeNeeds(pool, needed, rewards.free_codes(session, pool) if pool else None)


def _people(session: Session, ids: set[int]) -> list[tuple]:
    rows: list[tuple] = []
    ordered = sorted(ids)
    for start in range(0, len(ordered), 1000):
        chunk = ordered[start : start + 1000]
        rows += session.execute(
            select(
                Subscriber.id,
                Subscriber.email_hash,
                Subscriber.frequency,
                Subscriber.time_zone,
                Subscriber.paused_until,
                Suppression.id.is_not(None),
            )
            .outerjoin(Suppression, Suppression.email_hash == Subscriber.email_hash)
            .where(Subscriber.id.in_(chunk))
        ).all()
    return rows


def _history(session: Session, ids: set[int], since: datetime) -> dict[int, list[datetime]]:
    """Marketing sends per subscriber since ``since``, from the ledger (the truth, not Redis)."""
    history: dict[int, list[datetime]] = {}
    ordered = sorted(ids)
    for start in range(0, len(ordered), 1000):
        rows = session.execute(
            select(Delivery.subscriber_id, Delivery.sent_at).where(
                Delivery.subscriber_id.in_(ordered[start : start + 1000]),
                Delivery.state.in_([DeliveryState.SENT, DeliveryState.UNCERTAIN]),
                Delivery.sent_at > since,
            )
        )
        for subscriber_id, sent_at in rows:
            history.setdefault(subscriber_id, []).append(sent_at)
    return history
