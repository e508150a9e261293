"""A batch's decisions before sending: skip, defer (quiet hours, pause, caps) or reserve a cap place.

All the batch's cap checks and reservations go to Redis in one pipeline of Lua calls.
"""

from __future__ import annotations

from datetime import datetime

import redis
from sqlalchemy import update
from sqlalchemy.orm import Session

from newsletter.campaigns import caps
from newsletter.campaigns.ledger import BatchReport, Recipient, mark
from newsletter.core.config import Settings
from newsletter.models import Campaign, Delivery, DeliveryState
from newsletter.subscribers import suppression


def decide(
    session: Session,
    conn: redis.Redis,
    settings: Settings,
    campaign: Campaign,
    recipients: list[Recipient],
    now: datetime,
    report: BatchReport,
) -> list[Recipient]:
    """Skip, defer or reserve a cap place for every claimed recipient; the ones to send now."""
    policy = caps.Policy.from_settings(settings)
    deadline = campaign.deadline
    longest = max([w for _, w in policy.rules] + [30 * 86400])
    caps.ensure_counters(conn, session, longest, now)
    suppressed = suppression.suppressed_hashes(session, (r.email_hash for r in recipients))
    skipped: dict[str, list[int]] = {}
    deferred: list[tuple[int, datetime, str]] = []
    candidates: list[Recipient] = []
    for recipient in recipients:
        if not recipient.eligible:
            skipped.setdefault("unsubscribed", []).append(recipient.delivery_id)
        elif recipient.email_hash in suppressed:
            skipped.setdefault("suppressed", []).append(recipient.delivery_id)
        else:
            start = max(now, recipient.paused_until or now)
            why = "paused" if start > now else "quiet hours"
            earliest = caps.outside_quiet_hours(start, recipient.time_zone, policy.quiet_hours)
            verdict = caps.decide(earliest, now, deadline, why)
            if verdict.send:
                candidates.append(recipient)
            elif verdict.at:
                deferred.append((recipient.delivery_id, verdict.at, why))
            else:
                skipped.setdefault(verdict.reason, []).append(recipient.delivery_id)

    requests = [
        (r.subscriber_id, caps.member_for(r.delivery_id), policy.rules_for(caps.Frequency(r.frequency)))
        for r in candidates
    ]
    to_send = []
    for recipient, earliest in zip(candidates, caps.reserve_batch(conn, now, requests), strict=True):
        if earliest is None:
            to_send.append(recipient)
            continue
        earliest = caps.outside_quiet_hours(earliest, recipient.time_zone, policy.quiet_hours)
        verdict = caps.decide(earliest, now, deadline, "frequency cap")
        if verdict.at:
            deferred.append((recipient.delivery_id, verdict.at, "frequency cap"))
        else:
            skipped.setdefault(verdict.reason, []).append(recipient.delivery_id)

    for reason, ids in skipped.items():
        mark(session, ids, state=DeliveryState.SKIPPED, reason=reason[:300])
        report.skipped += len(ids)
        report.reasons[reason] = report.reasons.get(reason, 0) + len(ids)
    if deferred:  # one executemany (ORM bulk UPDATE by primary key), not one statement per row
        session.execute(
            update(Delivery),
            [
                {"id": delivery_id, "state": DeliveryState.DEFERRED, "send_after": at, "reason": why}
                for delivery_id, at, why in deferred
            ],
        )
    for _, _, why in deferred:
        report.reasons[why] = report.reasons.get(why, 0) + 1
    report.deferred += len(deferred)
    return to_send
