"""The sending engine: waves into the ledger, batches through caps, SMTP, and back into the ledger.

One delivery row per (campaign, subscriber) is the truth. A batch job claims its rows
(state ``sending``, one claim token), decides caps for the whole batch in one Redis
round trip, then sends in id order, marking each row ``sent`` before the next SMTP
transaction starts. If a worker dies, the only row of its claim that may have reached
the relay without being marked is the lowest-id row still ``sending``: the sweep marks
that one ``uncertain`` and hands the rest back as ``queued``, with their cap places given
back. Nobody gets two copies, and nobody is capped by a message never sent. One recipient
whose message cannot be built or handed over fails alone; the slice goes on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from sqlalchemy import DateTime, and_, exists, func, insert, literal, select, update
from sqlalchemy.orm import Session

from newsletter.campaigns import caps
from newsletter.campaigns.audience import audience_sql
from newsletter.core import clock
from newsletter.mail.skeleton import Skeleton, build_skeleton, personalise
from newsletter.mail.transports import TransportError
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Customer,
    Delivery,
    DeliveryState,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    SuppressionReason,
    Topic,
    Wave,
    WaveStatus,
)
from newsletter.subscribers import links, suppression

log = logging.getLogger(__name__)

ACTIVE_CAMPAIGN = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING)
#: SMTP answers at RCPT that mean the address does not exist: a hard bounce.
HARD_BOUNCES = {550, 551, 553}
HEARTBEAT_SECONDS = 5


def audience_columns() -> dict:
    return {
        "lifetime_value": Customer.lifetime_value,
        "orders_count": Customer.orders_count,
        "last_order_at": Customer.last_order_at,
        "tier": Customer.tier,
    }


def eligible_subscribers(topic_slug: str, audience: str, now: datetime, campaign_id: int | None = None):
    """SELECT of subscriber ids a wave targets: confirmed, with the topic, matching the audience,
    and (with ``campaign_id``) not already in that campaign's ledger."""
    topic_id = select(Topic.id).where(Topic.slug == topic_slug).scalar_subquery()
    condition = audience_sql(audience, audience_columns(), Customer.attributes, now)
    query = (
        select(Subscriber.id)
        .join(
            Subscription, and_(Subscription.subscriber_id == Subscriber.id, Subscription.topic_id == topic_id)
        )
        .outerjoin(Customer, Customer.email_hash == Subscriber.email_hash)
        .where(
            Subscriber.status == SubscriberStatus.ACTIVE,
            Subscription.status == SubscriptionStatus.ACTIVE,
            condition,
        )
    )
    if campaign_id is not None:
        query = query.where(
            ~exists().where(Delivery.campaign_id == campaign_id, Delivery.subscriber_id == Subscriber.id)
        )
    return query


def start_wave(session: Session, wave: Wave, now: datetime) -> int:
    """Freeze the wave's audience into the ledger (one row each, unique per campaign); returns how many."""
    campaign = wave.campaign
    chosen = eligible_subscribers(campaign.topic_slug, wave.audience, now, campaign.id)
    columns = ["campaign_id", "wave_id", "subscriber_id", "state", "attempts", "updated_at"]
    rows = chosen.with_only_columns(
        literal(campaign.id),
        literal(wave.id),
        Subscriber.id,
        literal(DeliveryState.QUEUED.value),
        literal(0),
        literal(now),
    )
    result = session.execute(insert(Delivery).from_select(columns, rows))
    wave.status = WaveStatus.SENDING
    wave.started_at = now
    if campaign.status == CampaignStatus.SCHEDULED:
        campaign.status = CampaignStatus.SENDING
    session.flush()
    return result.rowcount or 0


def due_waves(session: Session, now: datetime) -> list[Wave]:
    return list(
        session.scalars(
            select(Wave)
            .join(Campaign)
            .where(
                Wave.status == WaveStatus.WAITING, Wave.send_at <= now, Campaign.status.in_(ACTIVE_CAMPAIGN)
            )
            .order_by(Wave.send_at, Wave.position)
        )
    )


def batch_ranges(session: Session, campaign_id: int, now: datetime, size: int) -> list[tuple[int, int]]:
    """Keyset ranges (first id, last id) of rows ready to send: queued, or deferred and due."""
    ids = session.scalars(
        select(Delivery.id).where(Delivery.campaign_id == campaign_id, _ready(now)).order_by(Delivery.id)
    ).all()
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


def _ready(now: datetime):
    return (Delivery.state == DeliveryState.QUEUED) | (
        (Delivery.state == DeliveryState.DEFERRED) & (Delivery.send_after <= now)
    )


# --- one batch ---------------------------------------------------------------------------------


@dataclass
class Recipient:
    delivery_id: int
    wave_id: int
    subscriber_id: int
    email: str
    email_hash: str
    first_name: str | None
    time_zone: str
    frequency: str
    paused_until: datetime | None
    eligible: bool


@dataclass
class BatchReport:
    sent: int = 0
    deferred: int = 0
    skipped: int = 0
    failed: int = 0
    retried: int = 0
    stopped: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)


def claim(session: Session, campaign_id: int, first_id: int, last_id: int, now: datetime) -> str | None:
    """Take the batch's ready rows for this worker; the claim token, or None if nothing was ready."""
    token = uuid.uuid4().hex
    result = session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign_id, Delivery.id.between(first_id, last_id), _ready(now))
        .values(
            state=DeliveryState.SENDING, claimed_at=now, claim_token=token, attempts=Delivery.attempts + 1
        )
        .execution_options(synchronize_session=False)
    )
    return token if result.rowcount else None


def _recipients(session: Session, campaign: Campaign, token: str) -> list[Recipient]:
    topic_active = (
        select(Subscription.status)
        .join(Topic, Topic.id == Subscription.topic_id)
        .where(Subscription.subscriber_id == Subscriber.id, Topic.slug == campaign.topic_slug)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.wave_id,
            Subscriber.id,
            Subscriber.email,
            Subscriber.email_hash,
            Subscriber.first_name,
            Subscriber.time_zone,
            Subscriber.frequency,
            Subscriber.paused_until,
            (Subscriber.status == SubscriberStatus.ACTIVE)
            & (topic_active == SubscriptionStatus.ACTIVE.value),
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.claim_token == token, Delivery.state == DeliveryState.SENDING)
        .order_by(Delivery.id)
    ).all()
    return [Recipient(*row) for row in rows]


class Ledger:
    """The per-message statements of a batch, each its own transaction (autocommit).

    Right before each SMTP transaction one SELECT re-checks the row; right after the relay's
    250 one UPDATE marks it sent, durable when it returns. Two round trips per message
    instead of four (no BEGIN and COMMIT around them), and plain DBAPI calls: building and
    compiling SQLAlchemy statements cost more CPU than the rest of a message's work here.
    """

    def __init__(self, session: Session, topic_slug: str, token: str):
        self.connection = session.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT")
        self.token = token
        topic_id = int(self.connection.scalar(select(Topic.id).where(Topic.slug == topic_slug)))
        dialect = self.connection.dialect
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        #: how the dialect stores a datetime (SQLite: a string in SQLAlchemy's format)
        self._time = DateTime().bind_processor(dialect) or (lambda value: value)
        self._cursor = self.connection.connection.dbapi_connection.cursor()
        self._check_sql = (
            "SELECT d.claim_token, d.state, s.status, sub.status, sup.id FROM deliveries d "
            "JOIN subscribers s ON s.id = d.subscriber_id "
            f"LEFT JOIN subscriptions sub ON sub.subscriber_id = s.id AND sub.topic_id = {topic_id} "
            "LEFT JOIN suppressions sup ON sup.email_hash = s.email_hash "
            f"WHERE d.id = {mark}"
        )
        self._mark_sql = (
            f"UPDATE deliveries SET state = {mark}, sent_at = {mark}, message_id = {mark}, reason = NULL, "
            f"updated_at = {mark} WHERE id = {mark}"
        )

    def still_wanted(self, recipient: Recipient) -> str | None:
        """Why not to send now, or None.

        ``"claim lost"`` when the row is no longer this batch's (taken back as dead after a
        stall); otherwise unsubscribed, topic left or suppressed since the claim.
        """
        self._cursor.execute(self._check_sql, (recipient.delivery_id,))
        row = self._cursor.fetchone()
        if row is None or row[0] != self.token or row[1] != DeliveryState.SENDING.value:
            return "claim lost"
        if (
            row[2] != SubscriberStatus.ACTIVE.value
            or row[3] != SubscriptionStatus.ACTIVE.value
            or row[4] is not None
        ):
            return "unsubscribed before sending"
        return None

    def mark_sent(self, recipient: Recipient, message_id: str) -> None:
        now = self._time(clock.now())
        self._cursor.execute(
            self._mark_sql, (DeliveryState.SENT.value, now, message_id, now, recipient.delivery_id)
        )

    def reset_error_streak(self, campaign_id: int) -> None:
        """A message went through: the campaign's run of consecutive errors is over."""
        self.connection.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.error_streak > 0)
            .values(error_streak=0)
        )

    def close(self) -> None:
        self._cursor.close()
        self.connection.close()


def _mark(session: Session, ids: list[int], **values) -> None:
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def skeletons_for(campaign: Campaign) -> dict[int, Skeleton]:
    """The frozen email of each wave, encoded once for the whole batch."""
    frozen = campaign.compiled
    result = {}
    for wave in campaign.waves:
        email = frozen["waves"].get(wave.name) or frozen["waves"]["all"]
        result[wave.id] = build_skeleton(
            sender=frozen["sender"],
            subject=email["subject"],
            text=email["text"],
            html=email["html"],
            slots={k: tuple(v) for k, v in email["slots"].items()},
            headers=email["headers"],
        )
    return result


def personal_values(config: dict, campaign: Campaign, recipient: Recipient) -> dict[str, str]:
    who = _Who(recipient.subscriber_id, recipient.email_hash)
    values = {
        "first_name": recipient.first_name or "",
        "email": recipient.email,
        "unsubscribe_url": links.unsubscribe_url(config, who, topic=campaign.topic_slug),
        "preferences_url": links.preferences_url(config, who),
    }
    if campaign.sale_url:
        values["early_access_url"] = links.early_access_url(config, who, campaign.id)
    return values


@dataclass(frozen=True)
class _Who:
    """What links need of a subscriber, without loading the ORM object."""

    id: int
    email_hash: str


class RateLimiter:
    """Messages per second across every worker: a shared per-second counter in Redis."""

    def __init__(self, conn: redis.Redis, per_second: int, chunk: int = 10):
        self.conn, self.per_second, self.chunk = conn, per_second, chunk
        self.tokens = 0

    def take(self) -> None:
        if not self.per_second:
            return
        while self.tokens == 0:
            second = int(time.time())
            key = f"nl:rate:{second}"
            pipe = self.conn.pipeline(transaction=False)
            pipe.incrby(key, self.chunk)
            pipe.expire(key, 5)
            used, _ = pipe.execute()
            granted = max(0, min(self.chunk, self.per_second - (used - self.chunk)))
            if granted:
                self.tokens = granted
            else:
                time.sleep(max(0.0, second + 1 - time.time()))
        self.tokens -= 1


def send_batch(
    session: Session,
    conn: redis.Redis,
    config: dict,
    transport,
    campaign_id: int,
    first_id: int,
    last_id: int,
    commit: Callable[[], None],
) -> BatchReport:
    """Claim, decide caps, send in id order, record; ``commit`` makes each step durable."""
    report = BatchReport()
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.status not in ACTIVE_CAMPAIGN:
        report.stopped = "campaign not sending"
        return report
    now = clock.now()
    token = claim(session, campaign_id, first_id, last_id, now)
    commit()
    if token is None:
        return report
    heartbeat = f"nl:claim:{token}"
    # Beat well within the stale limit, or a live batch would be taken for dead.
    beat_every = min(HEARTBEAT_SECONDS, config["STALE_CLAIM_SECONDS"] / 3)
    conn.set(heartbeat, 1, ex=config["STALE_CLAIM_SECONDS"])
    last_beat = time.monotonic()

    recipients = _recipients(session, campaign, token)
    to_send = _decide(session, conn, config, campaign, recipients, now, report)
    commit()

    skeletons = skeletons_for(campaign)
    limiter = RateLimiter(conn, config["SEND_RATE"])
    ledger = Ledger(session, campaign.topic_slug, token)
    errors_since_success = 0
    try:
        for index, recipient in enumerate(to_send):
            if time.monotonic() - last_beat > beat_every:
                conn.set(heartbeat, 1, ex=config["STALE_CLAIM_SECONDS"])
                last_beat = time.monotonic()
                session.refresh(campaign, ["status"])
                commit()
                if campaign.status not in ACTIVE_CAMPAIGN:
                    _release(session, conn, to_send[index:], DeliveryState.QUEUED)
                    commit()
                    report.stopped = f"campaign {campaign.status.value}"
                    break
            why_not = ledger.still_wanted(recipient)
            if why_not == "claim lost":
                # The sweep took this batch back after a stall and gave back its cap places; the
                # rows (and any places taken for them since) belong to whoever claimed them next.
                report.stopped = "claim lost"
                break
            if why_not:
                caps.release(conn, recipient.subscriber_id, caps.member_for(recipient.delivery_id))
                _mark(session, [recipient.delivery_id], state=DeliveryState.SKIPPED, reason=why_not)
                commit()
                report.skipped += 1
                continue
            limiter.take()
            skeleton = skeletons[recipient.wave_id]
            message_id = f"<{uuid.uuid4().hex}@{skeleton.sender_domain}>"
            stop = None
            try:
                values = personal_values(config, campaign, recipient)
                data = personalise(skeleton, recipient.email, values, message_id=message_id)
            except Exception as exc:  # noqa: BLE001 - one person's data must not stop the slice
                stop = _on_bad_message(
                    session, conn, config, campaign, recipient, f"could not build the message: {exc}", report
                )
            if stop is None:
                try:
                    transport.send_raw(campaign.compiled["envelope_from"], [recipient.email], data)
                except TransportError as exc:
                    stop = _on_error(session, conn, config, campaign, recipient, exc, report)
                except Exception as exc:  # noqa: BLE001 - e.g. an address the relay's encoding refuses
                    transport.close()  # the SMTP dialogue is in an unknown state: start the next afresh
                    reason = f"could not hand the message over: {type(exc).__name__}: {exc}"
                    stop = _on_bad_message(session, conn, config, campaign, recipient, reason, report)
            if stop is not None:
                errors_since_success += 1
                commit()
                if stop:
                    _release(session, conn, to_send[index + 1 :], DeliveryState.QUEUED)
                    commit()
                    break
                continue
            # durable before the next SMTP transaction starts: the crash-safety invariant
            ledger.mark_sent(recipient, message_id)
            if errors_since_success:
                ledger.reset_error_streak(campaign.id)
                errors_since_success = 0
            report.sent += 1
    finally:
        ledger.close()
    conn.delete(heartbeat)
    finish_if_done(session, campaign)
    commit()
    return report


def _decide(session, conn, config, campaign, recipients, now, report) -> list[Recipient]:
    """Skip, defer or reserve a cap place for every claimed recipient; the ones to send now."""
    policy = caps.Policy.from_config(config)
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
        _mark(session, ids, state=DeliveryState.SKIPPED, reason=reason[:300])
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


def _on_error(session, conn, config, campaign, recipient, exc: TransportError, report) -> bool:
    """Record one failed attempt; True if the campaign has paused itself."""
    if exc.uncertain:
        # Maybe delivered: keep the cap place, never retry (a retry could be a second copy).
        _mark(
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
        _mark(
            session,
            [recipient.delivery_id],
            state=DeliveryState.DEFERRED,
            send_after=clock.now() + timedelta(seconds=backoff),
            reason=f"retry: {exc}"[:300],
        )
        report.retried += 1
    else:
        _mark(session, [recipient.delivery_id], state=DeliveryState.FAILED, reason=str(exc)[:300])
        report.failed += 1
        if exc.code in HARD_BOUNCES:
            suppression.suppress(
                session, recipient.email_hash, SuppressionReason.BOUNCED, f"smtp:{exc.code}", str(exc)[:300]
            )
    return _count_error(session, config, campaign, str(exc), report)


def _on_bad_message(session, conn, config, campaign, recipient, reason: str, report) -> bool:
    """One recipient's message could not be built or handed over: that row fails, the slice goes on.

    Nothing reached the relay, so the cap place goes back. The error counts towards the
    campaign's streak like a relay's refusal: one bad row is forgotten at the next success,
    but a run of them is a fault of the campaign or the system, and pausing keeps the rest of
    the list from failing for good.
    """
    caps.release(conn, recipient.subscriber_id, caps.member_for(recipient.delivery_id))
    _mark(session, [recipient.delivery_id], state=DeliveryState.FAILED, reason=reason[:300])
    report.failed += 1
    log.warning("campaign %s, delivery %s failed: %s", campaign.slug, recipient.delivery_id, reason)
    return _count_error(session, config, campaign, reason, report)


def _count_error(session, config, campaign, last: str, report) -> bool:
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
    if streak >= config["PAUSE_AFTER_ERRORS"]:
        reason = f"paused itself after {streak} consecutive send errors; last: {last}"[:1000]
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign.id, Campaign.status == CampaignStatus.SENDING)
            .values(status=CampaignStatus.PAUSED, pause_reason=reason)
        )
        report.stopped = reason
        log.warning("campaign %s: %s", campaign.slug, reason)
        return True
    return False


def _attempts(session: Session, delivery_id: int) -> int:
    return session.scalar(select(Delivery.attempts).where(Delivery.id == delivery_id)) or 0


def _release(session: Session, conn: redis.Redis, recipients: list[Recipient], state: DeliveryState) -> None:
    for recipient in recipients:
        caps.release(conn, recipient.subscriber_id, caps.member_for(recipient.delivery_id))
    _mark(session, [r.delivery_id for r in recipients], state=state, claim_token=None)


# --- state machine and recovery ----------------------------------------------------------------


def counts(session: Session, campaign_id: int) -> dict[str, dict[str, int]]:
    """Rows per state per wave."""
    rows = session.execute(
        select(Wave.name, Delivery.state, func.count())
        .join(Wave, Wave.id == Delivery.wave_id)
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Wave.name, Delivery.state)
    )
    result: dict[str, dict[str, int]] = {}
    for wave, state, n in rows:
        result.setdefault(wave, {})[state.value if hasattr(state, "value") else state] = n
    return result


def finish_if_done(session: Session, campaign: Campaign) -> bool:
    """DONE once every wave started and no row is queued, sending or deferred."""
    if campaign.status != CampaignStatus.SENDING:
        return False
    if any(w.status == WaveStatus.WAITING for w in campaign.waves):
        return False
    open_rows = session.scalar(
        select(func.count()).where(
            Delivery.campaign_id == campaign.id,
            Delivery.state.in_([DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.DEFERRED]),
        )
    )
    if open_rows:
        return False
    for wave in campaign.waves:
        wave.status = WaveStatus.DONE
    campaign.status = CampaignStatus.DONE
    return True


def recover_stale_claims(
    session: Session, conn: redis.Redis, now: datetime, stale_after: int
) -> dict[str, int]:
    """Hand back the rows of batches whose worker died: the lowest still-sending row is uncertain.

    The uncertain row keeps (or gets) its cap place: it counts as a send. Every row handed
    back gives its place back, whether the worker died after reserving it or before its
    decisions were committed; otherwise the person would be capped by a message never sent.
    The places go back before the caller commits, so no new claim can have taken them yet.
    """
    tokens = session.execute(
        select(Delivery.claim_token, func.min(Delivery.id), func.min(Delivery.claimed_at))
        .where(Delivery.state == DeliveryState.SENDING)
        .group_by(Delivery.claim_token)
    ).all()
    recovered = {"uncertain": 0, "requeued": 0}
    for token, lowest_id, claimed_at in tokens:
        alive = token is not None and conn.exists(f"nl:claim:{token}")
        if alive or claimed_at > now - timedelta(seconds=stale_after):
            continue
        uncertain = session.execute(
            update(Delivery)
            .where(Delivery.id == lowest_id)
            .values(
                state=DeliveryState.UNCERTAIN,
                sent_at=claimed_at,
                reason="worker died during the SMTP transaction: maybe delivered once, not retried",
            )
            .returning(Delivery.subscriber_id)
            .execution_options(synchronize_session=False)
        ).scalar_one()
        moved = session.execute(
            update(Delivery)
            .where(Delivery.claim_token == token, Delivery.state == DeliveryState.SENDING)
            .values(state=DeliveryState.QUEUED, claim_token=None)
            .returning(Delivery.id, Delivery.subscriber_id)
            .execution_options(synchronize_session=False)
        ).all()
        caps.hold(conn, uncertain, caps.member_for(lowest_id), claimed_at)
        caps.release_many(conn, ((subscriber_id, caps.member_for(id_)) for id_, subscriber_id in moved))
        recovered["uncertain"] += 1
        recovered["requeued"] += len(moved)
    return recovered


def due_campaigns(session: Session, now: datetime) -> list[int]:
    """Campaigns with rows ready to send now (queued, or deferred and due)."""
    return list(
        session.scalars(
            select(Delivery.campaign_id)
            .join(Campaign, Campaign.id == Delivery.campaign_id)
            .where(Campaign.status == CampaignStatus.SENDING, _ready(now))
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
