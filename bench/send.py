"""Campaign sending throughput: real workers, PostgreSQL, Redis, and Postfix's smtp-sink as relay.

    python bench/send.py [--subscribers 5000] [--workers 2] [--sqlite]

Seeds N confirmed subscribers, schedules campaigns/monthly-newsletter, starts it now, and runs
K ``newsletter worker`` processes until every delivery row is sent. Prints messages/s (from
the first to the last ``sent_at`` in the ledger, and wall time including the wave's start),
next to the reference measured in the same run: Postfix's ``smtp-source`` pushing the same
number of messages of the same size over K parallel sessions into the same smtp-sink, i.e.
what the relay and loopback allow with no engine at all. Caps and quiet hours are off
(every subscriber would otherwise be under the 1/20h cap after the first run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import create_engine, func, insert, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.mail.skeleton import build_skeleton, personalise  # noqa: E402

from newsletter import clock  # noqa: E402
from newsletter.migrate import upgrade  # noqa: E402
from newsletter.models import (  # noqa: E402
    Campaign,
    Delivery,
    DeliveryState,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Topic,
)
from newsletter.models.subscribers import address_hash  # noqa: E402

PG_URL = os.environ.get("NEWSLETTER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NEWSLETTER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
CAMPAIGN = "monthly-newsletter"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sink(port: int) -> subprocess.Popen:
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(sink).exists():
        raise SystemExit("smtp-sink not found: apt-get install postfix (it ships smtp-sink and smtp-source)")
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([sink, *user, f"127.0.0.1:{port}", "1024"], stdout=subprocess.DEVNULL)
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit("smtp-sink did not start")


def seed(url: str, count: int) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    now = clock.now()
    with engine.begin() as conn:
        topic_id = conn.scalar(select(Topic.id).where(Topic.slug == "newsletter"))
        for start in range(0, count, 5000):
            rows = []
            for i in range(start, min(count, start + 5000)):
                email = f"reader{i}@bench.example"
                rows.append(
                    {
                        "email": email,
                        "email_hash": address_hash(email),
                        "first_name": f"Reader {i}",
                        "status": SubscriberStatus.ACTIVE.value,
                        "created_at": now,
                        "confirmed_at": now,
                        "frequency": "any",
                        "time_zone": "UTC",
                    }
                )
            ids = conn.execute(insert(Subscriber).returning(Subscriber.id), rows).scalars().all()
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


def message_size(url: str) -> int:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        compiled = conn.scalar(select(Campaign.compiled).where(Campaign.slug == CAMPAIGN))
    engine.dispose()
    email = next(iter(compiled["waves"].values()))
    skeleton = build_skeleton(
        sender=compiled["sender"],
        subject=email["subject"],
        text=email["text"],
        html=email["html"],
        slots={k: tuple(v) for k, v in email["slots"].items()},
        headers=email["headers"],
    )
    values = {
        "first_name": "Reader 1",
        "email": "reader1@bench.example",
        "unsubscribe_url": "https://store.example/unsubscribe/" + "x" * 90,
        "preferences_url": "https://store.example/preferences/" + "x" * 80,
    }
    return len(personalise(skeleton, "reader1@bench.example", values, message_id="<bench@store.example>"))


def run(cmd: list[str], env: dict) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-send-"))
    schema = None
    if args.sqlite:
        url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    else:
        schema = f"nl_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    port = free_port()
    sink = start_sink(port)
    workers: list[subprocess.Popen] = []
    redis.Redis.from_url(REDIS_URL).flushdb()
    try:
        upgrade(url)
        seed(url, args.subscribers)
        env = {
            **os.environ,
            "NEWSLETTER_INSTANCE_PATH": str(tmp),
            "NEWSLETTER_SECRET_KEY": "bench-secret",
            "NEWSLETTER_DATABASE_URL": url,
            "NEWSLETTER_REDIS_URL": REDIS_URL,
            "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{port}",
            "NEWSLETTER_MARKETING_CAPS": "",
            "NEWSLETTER_QUIET_HOURS": "",
            "NEWSLETTER_TICK_INTERVAL": "1",
            "NEWSLETTER_BASE_URL": "https://store.example",
        }
        newsletter = str(Path(sys.executable).parent / "newsletter")
        run([newsletter, "campaign", "schedule", f"campaigns/{CAMPAIGN}"], env)
        run([newsletter, "campaign", "send", CAMPAIGN, "--now"], env)
        size = message_size(url)

        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        started = time.monotonic()
        workers = [
            subprocess.Popen([newsletter, "worker"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
            for _ in range(args.workers)
        ]
        while True:
            time.sleep(0.5)
            with engine.connect() as conn:
                total = conn.scalar(select(func.count()).select_from(Delivery))
                sent = conn.scalar(select(func.count()).where(Delivery.state == DeliveryState.SENT))
            if total and sent >= args.subscribers:
                break
            if time.monotonic() - started > 1800:
                raise SystemExit(f"not done after 30 minutes: {sent}/{args.subscribers} sent")
        wall = time.monotonic() - started
        with engine.connect() as conn:
            first, last = conn.execute(select(func.min(Delivery.sent_at), func.max(Delivery.sent_at))).one()
        engine.dispose()
        span = max((last - first).total_seconds(), 1e-3)
        for worker in workers:
            worker.terminate()

        source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
        began = time.monotonic()
        subprocess.run(
            [
                source,
                "-s",
                str(args.workers),
                "-m",
                str(args.subscribers),
                "-l",
                str(size),
                "-d",
                "-f",
                "news@store.example",
                "-t",
                "reader@bench.example",
                f"127.0.0.1:{port}",
            ],
            check=True,
        )
        reference = time.monotonic() - began
    finally:
        for worker in workers:
            worker.kill()
        sink.terminate()
        if schema:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        shutil.rmtree(tmp, ignore_errors=True)

    db = "SQLite" if args.sqlite else "PostgreSQL"
    print(f"{args.subscribers} messages of {size} bytes, {args.workers} workers, {db}, smtp-sink on loopback")
    print(f"engine:    {args.subscribers / span:8.0f} msg/s (first to last sent_at, {span:.1f} s)")
    print(f"engine:    {args.subscribers / wall:8.0f} msg/s wall (wave start and job pickup included)")
    rate = args.subscribers / reference
    print(f"reference: {rate:8.0f} msg/s smtp-source, {args.workers} sessions, same size")


if __name__ == "__main__":
    main()
