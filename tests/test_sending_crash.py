"""Crash safety with real worker processes: SIGKILL at random points of a 5,000-recipient send.

PostgreSQL only (several processes write at once), the real ``newsletter worker`` command,
an SMTP server on loopback counting what it accepted per recipient.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, insert, select

from newsletter import clock
from newsletter.models import Delivery, DeliveryState, Subscriber, Subscription, SubscriptionStatus, Topic
from newsletter.models.subscribers import address_hash
from newsletter.services import scheduling
from tests.conftest import REDIS_URL, _free_port
from tests.sending_helpers import FaultyHandler, now_floor, start_faulty_smtp, write_campaign

RECIPIENTS = 5000
NEWSLETTER = str(Path(sys.executable).parent / "newsletter")


def seed(url: str, count: int) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    now = clock.now()
    with engine.begin() as conn:
        topic_id = conn.scalar(select(Topic.id).where(Topic.slug == "newsletter"))
        people = [
            {
                "email": f"k{i}@example.com",
                "email_hash": address_hash(f"k{i}@example.com"),
                "status": "active",
                "created_at": now,
                "confirmed_at": now,
                "frequency": "any",
                "time_zone": "UTC",
            }
            for i in range(count)
        ]
        ids = conn.execute(insert(Subscriber).returning(Subscriber.id), people).scalars().all()
        conn.execute(
            insert(Subscription),
            [
                {
                    "subscriber_id": i,
                    "topic_id": topic_id,
                    "status": SubscriptionStatus.ACTIVE.value,
                    "updated_at": now,
                }
                for i in ids
            ],
        )
    engine.dispose()


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
    os.killpg(pid, signal.SIGKILL)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_sigkilled_workers_lose_no_send_and_send_nothing_twice(make_app, database_url, tmp_path, smtp_sink):
    handler = FaultyHandler()
    port = _free_port()
    controller = start_faulty_smtp(port, handler)
    settings = {
        "SMTP_URL": f"smtp://127.0.0.1:{port}",
        "MARKETING_CAPS": "",
        "QUIET_HOURS": "",
        "TICK_INTERVAL": "1",
        "STALE_CLAIM_SECONDS": "3",
        "BATCH_SIZE": "250",
    }
    app = make_app(**settings)
    runtime = app.extensions["newsletter"]
    seed(database_url, RECIPIENTS)
    with runtime.sessions() as session:
        campaign = scheduling.schedule(
            session,
            runtime.config,
            write_campaign(tmp_path, topic="newsletter", waves=[("all", "all", now_floor())]),
        )
        assert scheduling.send_now(session, campaign, clock.now()).ok  # `campaign send --now`
        session.commit()

    env = {
        **os.environ,
        "NEWSLETTER_INSTANCE_PATH": str(tmp_path / "instance"),
        "NEWSLETTER_SECRET_KEY": "test-secret",
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_REDIS_URL": REDIS_URL,
        "NEWSLETTER_BASE_URL": "https://newsletter.test",
        **{f"NEWSLETTER_{k}": v for k, v in settings.items()},
    }

    def start_worker() -> subprocess.Popen:
        # its own process group, so the test's own process is never in the line of fire
        return subprocess.Popen(
            [NEWSLETTER, "worker"],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def open_rows() -> int:
        """Rows not yet final (everyone counts as open until the wave has started)."""
        with runtime.sessions() as session:
            total = session.scalar(select(func.count()).select_from(Delivery))
            waiting = session.scalar(
                select(func.count()).where(
                    Delivery.state.in_([DeliveryState.QUEUED, DeliveryState.SENDING, DeliveryState.DEFERRED])
                )
            )
            return waiting + RECIPIENTS - total

    chance = random.Random(int(os.environ.get("NEWSLETTER_TEST_SEED", "5")))
    workers = [start_worker(), start_worker()]
    kills = 0
    progress: list[int] = []  # messages received at each kill
    try:
        deadline = time.monotonic() + 240
        while kills < 6 and time.monotonic() < deadline:
            time.sleep(chance.uniform(1.5, 4.0))  # a worker needs ~1 s to start
            victim = chance.randrange(len(workers))
            kill_with_horse(workers[victim].pid)
            progress.append(sum(handler.counts().values()))
            workers[victim].wait()
            kills += 1
            workers[victim] = start_worker()
        while open_rows() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert open_rows() == 0, "the campaign did not finish after the kills"
    finally:
        for worker in workers:  # never leave a worker behind: it would serve the next tests' queues
            try:
                kill_with_horse(worker.pid)
            except ProcessLookupError:
                pass
            worker.wait(timeout=30)
        controller.stop()

    received = handler.counts()
    with runtime.sessions() as session:
        ledger = dict(
            session.execute(
                select(Subscriber.email, Delivery.state).join(
                    Subscriber, Subscriber.id == Delivery.subscriber_id
                )
            ).all()
        )
    states = Counter(ledger.values())
    assert len(ledger) == RECIPIENTS  # one row each, whatever happened
    assert set(states) <= {DeliveryState.SENT, DeliveryState.UNCERTAIN}, states
    # at most the message inside each killed SMTP transaction (one per parallel slice)
    assert states[DeliveryState.UNCERTAIN] <= kills * runtime.config["SEND_CONNECTIONS"]
    assert max(received.values()) == 1, "somebody got two copies"
    for email, state in ledger.items():
        if state == DeliveryState.SENT:
            assert received[email] == 1, email
    assert sum(received.values()) >= states[DeliveryState.SENT]
    assert any(0 < n < RECIPIENTS for n in progress)  # some kills fell in the middle of the send
    print(
        f"kills at {progress} received, {states[DeliveryState.UNCERTAIN]} uncertain, {len(received)} received"
    )
