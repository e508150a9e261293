"""Crash safety with real worker processes and the store's default caps: SIGKILL at chosen moments.

PostgreSQL only (several processes write at once), the real ``newsletter worker`` command, an
SMTP server on loopback that records what it accepted (recipient and Message-ID) and kills a
worker, with its work horse, when the Nth message arrives: the kills are placed by the state
of the send, never by sleeping. Quiet hours are off so that only the caps (1/20h, 3/7d, 8/30d)
decide; a row handed back from a dead worker that kept its cap place would show up as
``deferred: frequency cap`` for someone who never received anything.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, insert, select

from newsletter.campaigns import scheduling
from newsletter.core import clock
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryState,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Topic,
)
from newsletter.models.subscribers import address_hash
from tests.conftest import REDIS_URL, _free_port
from tests.sending_helpers import now_floor, start_faulty_smtp, write_campaign

NEWSLETTER = str(Path(sys.executable).parent / "newsletter")
#: the default caps; no quiet hours, or part of the list would wait for its morning
SETTINGS = {"QUIET_HOURS": "", "TICK_INTERVAL": "1", "STALE_CLAIM_SECONDS": "3", "BATCH_SIZE": "250"}
#: bound on a whole chaos run (it takes well under a minute on an idle machine)
RUN_SECONDS = 600
MESSAGE_ID = re.compile(rb"^Message-ID: (<[^>]+>)\r?$", re.MULTILINE | re.IGNORECASE)


def seed(url: str, people: dict[str, list[str]]) -> None:
    """Confirmed subscribers (email -> topic slugs), straight into the database."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    now = clock.now()
    with engine.begin() as conn:
        topics = dict(conn.execute(select(Topic.slug, Topic.id)).all())
        emails = list(people)
        ids = (
            conn.execute(
                insert(Subscriber).returning(Subscriber.id, sort_by_parameter_order=True),
                [
                    {
                        "email": email,
                        "email_hash": address_hash(email),
                        "status": "active",
                        "created_at": now,
                        "confirmed_at": now,
                        "frequency": "any",
                        "time_zone": "UTC",
                    }
                    for email in emails
                ],
            )
            .scalars()
            .all()
        )
        conn.execute(
            insert(Subscription),
            [
                {
                    "subscriber_id": subscriber_id,
                    "topic_id": topics[slug],
                    "status": SubscriptionStatus.ACTIVE.value,
                    "updated_at": now,
                }
                for subscriber_id, email in zip(ids, emails, strict=True)
                for slug in people[email]
            ],
        )
    engine.dispose()


def worker_env(tmp_path, database_url: str, settings: dict[str, str]) -> dict[str, str]:
    """The environment of a real ``newsletter worker`` on the test's database, Redis and settings."""
    return {
        **os.environ,
        "NEWSLETTER_INSTANCE_PATH": str(tmp_path / "instance"),
        "NEWSLETTER_SECRET_KEY": "test-secret",
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_REDIS_URL": REDIS_URL,
        "NEWSLETTER_BASE_URL": "https://newsletter.test",
        **{f"NEWSLETTER_{k}": v for k, v in settings.items()},
    }


def kill_with_horse(pid: int) -> None:
    """SIGKILL a worker and its work horse (RQ puts the horse in a process group of its own)."""
    try:
        horses = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        horses = []
    for horse in horses:
        try:
            os.kill(horse, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Workers:
    """Real ``newsletter worker`` processes, each in a process group of its own."""

    def __init__(self, env: dict, count: int):
        self.env = env
        self.lock = threading.Lock()
        self.processes = [self._start() for _ in range(count)]
        self.kills = 0

    def _start(self) -> subprocess.Popen:
        # its own process group, so the test's own process is never in the line of fire
        return subprocess.Popen(
            [NEWSLETTER, "worker"],
            env=self.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill_one_and_replace(self) -> None:
        """SIGKILL the next worker in turn (and its work horse), and start another in its place."""
        with self.lock:
            victim = self.kills % len(self.processes)
            kill_with_horse(self.processes[victim].pid)
            self.processes[victim].wait(timeout=30)
            self.processes[victim] = self._start()
            self.kills += 1

    def stop(self) -> None:
        """Never leave a worker behind: it would serve the next tests' queues."""
        with self.lock:
            for process in self.processes:
                kill_with_horse(process.pid)
                process.wait(timeout=30)


class KillingRelay:
    """Accepts everything; records (recipient, Message-ID); when the Nth message of ``kill_at``
    arrives, kills a worker before answering, so the kill falls inside a send in progress."""

    def __init__(self, kill_at: list[int]):
        self.kill_at = set(kill_at)
        self.planned = sorted(kill_at)
        self.workers: Workers | None = None
        self.accepted: list[tuple[str, str]] = []
        self.kills_at: list[int] = []  # messages received when each kill came
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        found = MESSAGE_ID.search(envelope.original_content.split(b"\r\n\r\n", 1)[0])
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.accepted.append((rcpt, found.group(1).decode() if found else ""))
            count = len(self.accepted)
        if count in self.kill_at and self.workers is not None:
            self.workers.kill_one_and_replace()  # blocks the relay for the moment of the kill
            self.kills_at.append(count)
        return "250 OK"

    def received(self) -> dict[str, list[str]]:
        """Message-IDs received per recipient."""
        with self.lock:
            result: dict[str, list[str]] = {}
            for rcpt, message_id in self.accepted:
                result.setdefault(rcpt, []).append(message_id)
            return result


def run_chaos(make_app, database_url, tmp_path, campaigns: list[str], total: int, kills: int):
    """Send ``campaigns`` (slug -> topic, started together) with two workers killed ``kills`` times,
    spread over the first ``total`` messages; wait until nothing is left to send now.
    Returns (relay, runtime, killed worker count)."""
    kill_at = [round(total * (i + 1) / (kills + 1)) for i in range(kills)]
    relay = KillingRelay(kill_at)
    port = _free_port()
    controller = start_faulty_smtp(port, relay)
    settings = {"SMTP_URL": f"smtp://127.0.0.1:{port}", **SETTINGS}
    app = make_app(**settings)
    runtime = app.extensions["newsletter"]
    with runtime.sessions() as session:
        for slug, topic in campaigns:
            folder = write_campaign(tmp_path, slug=slug, topic=topic, waves=[("all", "all", now_floor())])
            campaign = scheduling.schedule(session, runtime.settings, folder)
            assert scheduling.send_now(session, campaign, clock.now()).ok  # `campaign send --now`
        session.commit()
    env = worker_env(tmp_path, database_url, settings)

    def settled() -> bool:
        """Every wave started and no row left to send now (queued, claimed, sending, or deferred and due)."""
        with runtime.sessions() as session:
            waiting = session.scalar(select(func.count()).where(Campaign.status == CampaignStatus.SCHEDULED))
            open_now = session.scalar(
                select(func.count()).where(
                    Delivery.state.in_([DeliveryState.QUEUED, DeliveryState.CLAIMED, DeliveryState.SENDING])
                    | ((Delivery.state == DeliveryState.DEFERRED) & (Delivery.send_after <= clock.now()))
                )
            )
            rows = session.scalar(select(func.count()).select_from(Delivery))
        return waiting == 0 and rows > 0 and open_now == 0

    workers = Workers(env, 2)
    relay.workers = workers
    try:
        deadline = time.monotonic() + RUN_SECONDS
        # Settled means nothing more will arrive now; every kill point lies below what must arrive.
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.2)  # polling a condition, bounded by the deadline
        assert settled(), "the send did not settle after the kills"
    finally:
        relay.workers = None
        workers.stop()
        controller.stop()
    return relay, runtime, workers.kills


def ledger_of(runtime) -> list[tuple[str, str, DeliveryState, str | None, str | None]]:
    """(email, campaign slug, state, reason, message_id) of every delivery row."""
    with runtime.sessions() as session:
        return [
            tuple(row)
            for row in session.execute(
                select(Subscriber.email, Campaign.slug, Delivery.state, Delivery.reason, Delivery.message_id)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .join(Campaign, Campaign.id == Delivery.campaign_id)
            )
        ]


def assert_sent_rows_match_what_arrived(ledger, received: dict[str, list[str]]) -> None:
    """A ``sent`` row's message arrived once; an ``uncertain`` one at most once; nothing else arrived."""
    expected = {(email, mid) for email, _, state, _, mid in ledger if state == DeliveryState.SENT}
    arrived = {(email, mid) for email, mids in received.items() for mid in mids}
    assert expected <= arrived, "a row is marked sent but its message never arrived"
    maybe = {email for email, _, state, _, _ in ledger if state == DeliveryState.UNCERTAIN}
    extra = {email for email, mid in arrived - expected}
    assert extra <= maybe, f"messages arrived that the ledger has no sent row for: {sorted(extra - maybe)}"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_sigkilled_workers_lose_no_send_send_nothing_twice_and_leave_nobody_capped(
    make_app, database_url, tmp_path, smtp_sink
):
    recipients = 3000
    seed(database_url, {f"k{i}@example.com": ["newsletter"] for i in range(recipients)})
    relay, runtime, kills = run_chaos(
        make_app, database_url, tmp_path, [("news", "newsletter")], recipients, 6
    )

    received = relay.received()
    ledger = ledger_of(runtime)
    states = Counter(state for _, _, state, _, _ in ledger)
    assert len(ledger) == recipients  # one row each, whatever happened
    # nobody is deferred or skipped: sent + uncertain == eligible
    assert states[DeliveryState.SENT] + states[DeliveryState.UNCERTAIN] == recipients, states
    # at most the message inside each killed SMTP transaction (one per parallel slice)
    assert states[DeliveryState.UNCERTAIN] <= kills * runtime.settings.send_connections
    assert max(len(mids) for mids in received.values()) == 1, "somebody got two copies"
    assert_sent_rows_match_what_arrived(ledger, received)
    assert relay.kills_at == relay.planned, "every kill fell inside the send"
    print(f"kills at {relay.kills_at} received, {states[DeliveryState.UNCERTAIN]} uncertain")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_chaos_two_campaigns_overlapping_audiences_default_caps(make_app, database_url, tmp_path, smtp_sink):
    """Two newsletters started together: "news" to people 0-1599, "offers" to 800-2399.

    Under the 1/20h cap each person may get one of them today: the 800 in both get whichever
    reserved their place first, the other row waits 20 hours. So: every person has exactly one
    row sent or uncertain (sent + uncertain == eligible people), every other row is deferred
    for the frequency cap (and only people with a sent or uncertain row elsewhere are), and
    nobody received two messages. Uncertain counts as a send by design (it may have arrived),
    so "capped although never mailed" means: capped with no sent and no uncertain row.
    """
    people = 2400
    audience = {
        f"c{i}@example.com": (["newsletter"] if i < 1600 else []) + (["early-access"] if i >= 800 else [])
        for i in range(people)
    }
    seed(database_url, audience)
    relay, runtime, kills = run_chaos(
        make_app, database_url, tmp_path, [("news", "newsletter"), ("offers", "early-access")], people, 6
    )

    received = relay.received()
    ledger = ledger_of(runtime)
    assert len(ledger) == sum(len(topics) for topics in audience.values())  # 3,200 rows, one per person each
    mailed: Counter = Counter()  # sent or uncertain rows per person
    capped: set[str] = set()
    for email, _slug, state, reason, _ in ledger:
        if state in (DeliveryState.SENT, DeliveryState.UNCERTAIN):
            mailed[email] += 1
        else:
            assert state == DeliveryState.DEFERRED and reason == "frequency cap", (email, state, reason)
            capped.add(email)
    assert set(mailed) == set(audience) and set(mailed.values()) == {1}  # sent + uncertain == eligible
    # so a capped person's other row is sent or uncertain: nobody never mailed is capped
    assert len(capped) == 800  # the overlap, each deferred in exactly one of the two
    uncertain = sum(state == DeliveryState.UNCERTAIN for _, _, state, _, _ in ledger)
    assert uncertain <= kills * runtime.settings.send_connections
    assert max(len(mids) for mids in received.values()) == 1, "somebody got two messages"
    assert_sent_rows_match_what_arrived(ledger, received)
    assert relay.kills_at == relay.planned, "every kill fell inside the send"
    print(f"kills at {relay.kills_at} received, {uncertain} uncertain, {len(capped)} capped")
