"""A batch's decisions before sending: skip, defer (quiet hours, pause, caps) or reserve a cap place.

All the batch's cap checks and reservations go to Redis in one pipeline of Lua calls. The
decisions touch only rows the batch still holds (``claimed`` under its token): a batch taken
for dead after a stall writes nothing over the rows' next owner.
"""

from __future__ import annotations

from datetime import datetime

import redis
from sqlalchemy import Integer, Text, bindparam, column, func, select, update
from sqlalchemy.orm import Session

from newsletter.campaigns import caps
from newsletter.campaigns.ledger import TOPIC_RETIRED, BatchReport, Recipient
from newsletter.core.config import Settings
from newsletter.core.db import among, array_param
from newsletter.models import Campaign, Delivery, DeliveryState, Topic
from newsletter.subscribers import suppression


def decide(
    session: Session,
    conn: redis.Redis,
    settings: Settings,
    campaign: Campaign,
    recipients: list[Recipient],
    token: str,
    now: datetime,
    report: BatchReport,
) -> list[Recipient]:
    """Skip, defer or reserve a cap place for every claimed recipient; the ones to send now.

    The rows decided here stay ``claimed`` until ``start_sending`` commits them as ``sending``.
    """
    policy = caps.Policy.from_settings(settings)
    deadline = campaign.deadline
    longest = max([w for _, w in policy.rules] + [30 * 86400])
    caps.ensure_counters(conn, session, longest, now)
    suppressed = suppression.suppressed_hashes(session, (r.email_hash for r in recipients))
    retired = session.scalar(select(Topic.retired_at).where(Topic.slug == campaign.topic_slug))
    skipped: dict[str, list[int]] = {}
    deferred: list[tuple[int, datetime, str]] = []
    candidates: list[Recipient] = []
    for recipient in recipients:
        if retired is not None:
            skipped.setdefault(TOPIC_RETIRED, []).append(recipient.delivery_id)
        elif not recipient.eligible:
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

    owned = (Delivery.claim_token == token) & (Delivery.state == DeliveryState.CLAIMED)
    for reason, ids in skipped.items():
        session.execute(
            update(Delivery)
            .where(owned, among(session, Delivery.id, ids))
            .values(state=DeliveryState.SKIPPED, reason=reason[:300])
            .execution_options(synchronize_session=False)
        )
        report.skipped += len(ids)
        report.reasons[reason] = report.reasons.get(reason, 0) + len(ids)
    if deferred:
        _defer(session, owned, deferred)
    for _, _, why in deferred:
        report.reasons[why] = report.reasons.get(why, 0) + 1
    report.deferred += len(deferred)
    return to_send


def _defer(session: Session, owned, deferred: list[tuple[int, datetime, str]]) -> None:
    """Each deferred row's own time and reason, in one statement on PostgreSQL.

    An executemany there is one UPDATE per row, and each fires the ledger's tally triggers
    (0.3 ms of PostgreSQL per row, seen in the send benchmark, where 30% of a batch is capped);
    one UPDATE ... FROM unnest(ids, times, reasons) fires them once. SQLite keeps the executemany.
    """
    table = Delivery.__table__
    if session.get_bind().dialect.name != "postgresql":
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("row_id"), owned)
            .values(state=DeliveryState.DEFERRED, send_after=bindparam("at"), reason=bindparam("why")),
            [{"row_id": delivery_id, "at": at, "why": why} for delivery_id, at, why in deferred],
        )
        return
    ids, times, reasons = zip(*deferred, strict=True)
    rows = func.unnest(
        array_param("row_ids", ids, Integer),
        array_param("times", times, table.c.send_after.type),
        array_param("reasons", reasons, table.c.reason.type),
    ).table_valued(column("row_id", Integer), column("at", table.c.send_after.type), column("why", Text))
    rows = rows.render_derived(name="deferred")  # AS deferred(row_id, at, why)
    session.execute(
        update(table)
        .where(table.c.id == rows.c.row_id, owned)
        .values(state=DeliveryState.DEFERRED, send_after=rows.c.at, reason=rows.c.why)
    )


def start_sending(session: Session, token: str, to_send: list[Recipient]) -> bool:
    """Mark the batch's rows to send ``sending`` (committed by the caller with the decisions).

    False if the batch no longer holds them all (taken back as dead after a stall): then the
    caller rolls its decisions back and sends nothing.
    """
    ids = [r.delivery_id for r in to_send]
    promoted = 0
    for start in range(0, len(ids), 500):  # bounded IN lists
        promoted += session.execute(
            update(Delivery)
            .where(
                Delivery.claim_token == token,
                Delivery.state == DeliveryState.CLAIMED,
                among(session, Delivery.id, ids[start : start + 500]),
            )
            .values(state=DeliveryState.SENDING)
            .execution_options(synchronize_session=False)
        ).rowcount
    return promoted == len(ids)
