"""The delivery ledger as a batch sees it: ready rows, claims, recipients, and marking rows.

One row per (campaign, subscriber) is the truth; Redis only holds what can be rebuilt from it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import redis
from sqlalchemy import DateTime, func, select, update
from sqlalchemy.orm import Session

from newsletter.campaigns import caps
from newsletter.core import clock
from newsletter.core.db import among
from newsletter.models import (
    Campaign,
    Delivery,
    DeliveryState,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Topic,
    Wave,
)

#: the reason on a row whose campaign's topic was retired (``newsletter topics retire``) after it was queued
TOPIC_RETIRED = "topic retired"


def ready(now: datetime):
    """Rows ready to send: queued, or deferred and due."""
    return (Delivery.state == DeliveryState.QUEUED) | (
        (Delivery.state == DeliveryState.DEFERRED) & (Delivery.send_after <= now)
    )


def batch_ranges(session: Session, campaign_id: int, now: datetime, size: int) -> list[tuple[int, int]]:
    """Keyset ranges (first id, last id) of rows ready to send: queued, or deferred and due.

    Cut by the database (every ``size`` rows in id order is one group), so the ticking worker holds
    one pair per batch, not every ready id (its peak RSS was 328 MB in a million-person send).
    """
    ordered = (
        select(Delivery.id, (func.row_number().over(order_by=Delivery.id) - 1).label("place"))
        .where(Delivery.campaign_id == campaign_id, ready(now))
        .subquery()
    )
    batch = ordered.c.place - ordered.c.place % size  # its batch's first place (integer on both)
    query = select(func.min(ordered.c.id), func.max(ordered.c.id)).group_by(batch).order_by(batch)
    return [(first, last) for first, last in session.execute(query)]


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
    #: the person's stored language (None: none chosen); picks the campaign's variant
    language: str | None = None
    #: the language of the email sent to them, set by the batch as it picks their variant (mark_sent)
    variant: str | None = None


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
        .where(Delivery.campaign_id == campaign_id, Delivery.id.between(first_id, last_id), ready(now))
        .values(
            state=DeliveryState.CLAIMED, claimed_at=now, claim_token=token, attempts=Delivery.attempts + 1
        )
        .execution_options(synchronize_session=False)
    )
    return token if result.rowcount else None


def load_recipients(session: Session, campaign: Campaign, token: str) -> list[Recipient]:
    topic_active = (
        select(Subscription.status)
        .join(Topic, Topic.id == Subscription.topic_id)
        .where(Subscription.subscriber_id == Subscriber.id, Topic.slug == campaign.topic_slug)
        .scalar_subquery()
    )
    # Core rows (a batch's columns, no ORM entities): the ORM's row processing cost more than the query
    rows = (
        session.connection()
        .execute(
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
                Subscriber.language,
            )
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            # the campaign too: no index leads with the claim, and without it PostgreSQL read the
            # whole ledger for each slice's few hundred rows
            .where(
                Delivery.campaign_id == campaign.id,
                Delivery.state == DeliveryState.CLAIMED,
                Delivery.claim_token == token,
            )
            .order_by(Delivery.id)
        )
        .all()
    )
    return [Recipient(*row) for row in rows]


def heartbeat_key(token: str) -> str:
    """The Redis key a live slice keeps fresh; gone (expired) means its worker stopped."""
    return f"nl:claim:{token}"


def progress_key(token: str) -> str:
    """The Redis key naming the row whose SMTP transaction a slice started last."""
    return f"nl:claim:{token}:at"


#: how long a slice's progress note outlives its last message: any sweep comes long before
PROGRESS_SECONDS = 24 * 3600


def message_id_for(token: str, delivery_id: int, domain: str) -> str:
    """A message's Message-ID: its claim's token and its row, so the progress note's one gives the
    others of its slice (a retry has a new claim, so a new Message-ID)."""
    before, after = message_id_around(token, domain)
    return f"{before}{delivery_id}{after}"


def message_id_around(token: str, domain: str) -> tuple[str, str]:
    """What comes before and after the row's id in the Message-IDs of a slice (``message_id_for``)."""
    return f"<{token}.", f"@{domain}>"


def read_note(note: bytes | str) -> tuple[int, str]:
    """The row a progress note names and the Message-ID domain of its slice."""
    text = note.decode() if isinstance(note, bytes) else note
    local, _, domain = text.strip("<>").partition("@")
    return int(local.rpartition(".")[2]), domain


class Ledger:
    """The per-message statements of a slice, on a connection of its own (autocommit).

    Right before each SMTP transaction the row is re-checked (one SELECT: unsubscribed, topic
    left or retired, suppressed, claim lost) and the slice's progress note in Redis names it.
    After the relay's 250 the row waits here; every ``mark_every`` rows are marked ``sent`` in
    one statement (PostgreSQL: ``UPDATE ... FROM unnest``), durable when it returns, and so are
    the rest when the slice ends. A mark and its commit were the largest cost of a message in
    PostgreSQL; one statement per group is the saving. A worker killed in between leaves those
    rows ``sending``: the sweep reads the note (recovery.py) and marks the rows below it sent
    (the relay accepted them), the noted one uncertain, and hands the rest back. Plain DBAPI
    calls, statements prepared once per connection: building SQLAlchemy statements cost more
    CPU than the rest of a message's work.
    """

    def __init__(self, session: Session, conn: redis.Redis, topic_slug: str, token: str, mark_every: int = 1):
        self.connection = session.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT")
        self.token, self.mark_every = token, max(1, mark_every)
        self._redis, self._progress = conn, progress_key(token)
        topic_id = int(self.connection.scalar(select(Topic.id).where(Topic.slug == topic_slug)))
        dialect = self.connection.dialect
        self._postgres = dialect.name == "postgresql"
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        #: how the dialect stores a datetime (SQLite: a string in SQLAlchemy's format)
        self._time = DateTime().bind_processor(dialect) or (lambda value: value)
        self._cursor = self.connection.connection.dbapi_connection.cursor()
        self._options = {"prepare": True} if self._postgres else {}
        # the notes go out on a Redis connection of their own whose replies are read with the
        # group's mark: a round trip per message cost the worker ~0.2 ms of CPU (redis-py)
        self._notes = conn.connection_pool.get_connection()
        self._unread = 0
        self._check_sql = (
            "SELECT d.claim_token, d.state, s.status, sub.status, sup.id, t.retired_at FROM deliveries d "
            "JOIN subscribers s ON s.id = d.subscriber_id "
            f"JOIN topics t ON t.id = {topic_id} "
            f"LEFT JOIN subscriptions sub ON sub.subscriber_id = s.id AND sub.topic_id = {topic_id} "
            "LEFT JOIN suppressions sup ON sup.email_hash = s.email_hash "
            f"WHERE d.id = {mark}"
        )
        # one row per message (SQLite, in one transaction) or one statement per group (PostgreSQL)
        self._mark_sql = (
            f"UPDATE deliveries SET state = {mark}, sent_at = {mark}, message_id = {mark}, reason = NULL, "
            f"language = {mark}, updated_at = {mark} WHERE id = {mark}"
        )
        self._marks_sql = (
            "UPDATE deliveries d SET state = %s, sent_at = m.sent_at, message_id = m.message_id, "
            "reason = NULL, language = m.language, updated_at = %s "
            "FROM unnest(%s::integer[], %s::text[], %s::text[], %s::timestamp[]) "
            "AS m(id, message_id, language, sent_at) WHERE d.id = m.id"
        )
        #: rows the relay accepted, not marked yet: (id, message id, language, sent at)
        self._accepted: list[tuple[int, str, str | None, object]] = []

    def still_wanted(self, recipient: Recipient) -> str | None:
        """Why not to send now, or None.

        ``"claim lost"`` when the row is no longer this batch's (taken back as dead after a
        stall); otherwise unsubscribed, topic left, topic retired or suppressed since the claim.
        """
        self._cursor.execute(self._check_sql, (recipient.delivery_id,), **self._options)
        return self._why_not(self._cursor.fetchone())

    def _why_not(self, row) -> str | None:
        if row is None or row[0] != self.token or row[1] != DeliveryState.SENDING.value:
            return "claim lost"
        if row[5] is not None:
            return TOPIC_RETIRED
        if (
            row[2] != SubscriberStatus.ACTIVE.value
            or row[3] != SubscriptionStatus.ACTIVE.value
            or row[4] is not None
        ):
            return "unsubscribed before sending"
        return None

    def starting(self, message_id: str) -> None:
        """Note in Redis that the SMTP transaction of ``message_id`` (``message_id_for``) starts now;
        call right before it.

        The SET is written to the socket, its reply read with the next group: Redis applies a
        connection's commands in order, and a sweep reads the note only after the slice has been
        silent for ``STALE_CLAIM_SECONDS``, long after the kernel delivered it (also when the
        worker is killed right after the write).
        """
        self._notes.send_command("SET", self._progress, message_id, "EX", PROGRESS_SECONDS)
        self._unread += 1

    def _read_notes(self) -> None:
        while self._unread:
            self._notes.read_response()
            self._unread -= 1

    def mark_sent(self, recipient: Recipient, message_id: str) -> None:
        """The relay accepted ``recipient``'s message (in the language of ``recipient.variant``):
        marked ``sent`` with the next group, or at once if the group is full."""
        self._accepted.append((recipient.delivery_id, message_id, recipient.variant, clock.now()))
        if len(self._accepted) >= self.mark_every:
            self.flush()

    def flush(self) -> None:
        """Mark every accepted row ``sent`` (one statement on PostgreSQL), durable on return."""
        self._read_notes()  # an error Redis gave a note surfaces here, before the group is marked
        accepted, self._accepted = self._accepted, []
        if not accepted:
            return
        now = self._time(clock.now())
        if self._postgres:
            ids, message_ids, languages, times = (list(column) for column in zip(*accepted, strict=True))
            self._cursor.execute(
                self._marks_sql,
                (DeliveryState.SENT.value, now, ids, message_ids, languages, times),
                **self._options,
            )
            return
        rows = [
            (DeliveryState.SENT.value, self._time(at), message_id, language, now, delivery_id)
            for delivery_id, message_id, language, at in accepted
        ]
        self._cursor.execute("BEGIN")
        try:
            self._cursor.executemany(self._mark_sql, rows)
        except BaseException:
            self._cursor.execute("ROLLBACK")
            raise
        self._cursor.execute("COMMIT")

    def reset_error_streak(self, campaign_id: int) -> None:
        """A message went through: the campaign's run of consecutive errors is over."""
        self.connection.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.error_streak > 0)
            .values(error_streak=0)
        )

    def close(self) -> None:
        """Mark what is left and let the connection go (the progress note stays: ``finished``)."""
        try:
            self.flush()
        finally:
            if self._unread:  # replies left unread: the connection cannot serve anyone else
                self._notes.disconnect()
                self._unread = 0
            self._redis.connection_pool.release(self._notes)
            self._cursor.close()
            self.connection.close()

    def finished(self) -> None:
        """The slice holds no ``sending`` row any more: its progress note can go."""
        self._redis.delete(self._progress)


def mark(session: Session, ids: list[int], **values) -> None:
    """Set ``values`` on these delivery rows (one UPDATE)."""
    if ids:
        session.execute(
            update(Delivery)
            .where(among(session, Delivery.id, ids))
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def release(session: Session, conn: redis.Redis, recipients: list[Recipient], state: DeliveryState) -> None:
    """Hand rows back (``state``, no claim) and give their cap places back."""
    for recipient in recipients:
        caps.release(conn, recipient.subscriber_id, caps.member_for(recipient.delivery_id))
    mark(session, [r.delivery_id for r in recipients], state=state, claim_token=None)


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
