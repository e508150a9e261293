"""GET /admin/overview of a 1,000,000-subscriber list, on SQLite and PostgreSQL, signed in.

    python bench/dashboard_overview.py [--size 1000000] [--runs 9] [--pg-url URL] [--redis-url URL]
                                       [--skip-sqlite] [--skip-pg]

Builds, with ``INSERT ... SELECT`` (generate_series on PostgreSQL, a recursive CTE on SQLite) in a
database migrated like production: ``--size`` subscribers (80% confirmed, 10% pending, 8%
unsubscribed, 2% erased), their consent ledger spread over the last 400 days (a signup for each,
a confirmation for all but the pending, an unsubscribe, an erasure: about 2.1 events per
person), suppressions for the unsubscribed and erased, and one campaign sent 3 days ago to the
confirmed (800,000 deliveries) with 1% hard bounces and 0.05% complaints as ``delivery_events``.
Then, through the Flask test client, signed in as a viewer:

- first request: the rollup is empty, so it counts the whole ledger once (the migration's
  backfill, paid by whoever opens the page first);
- cold: a fresh app (new engine, empty caches) after 1,000 new ledger events: the catch-up;
- warm: the median, min and max of ``--runs`` requests (each catches up whatever is new: nothing,
  and the charts of unchanged numbers come from admin/charts.py's cache);
- busy: a new ledger event before each request, so each catches up one event and draws its charts;

next to the same-run reference GET /admin/login (a trivial page through the same stack).
PostgreSQL: ``--pg-url`` or NEWSLETTER_BENCH_PG_URL (a scratch schema is made and dropped);
Redis (the sign-in throttle): ``--redis-url`` or NEWSLETTER_BENCH_REDIS_URL.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import series  # noqa: E402
from newsletter import create_app  # noqa: E402
from newsletter.admin import accounts  # noqa: E402
from newsletter.core.db import make_engine  # noqa: E402
from newsletter.core.migrate import upgrade  # noqa: E402
from newsletter.models import Role  # noqa: E402

PG_URL = os.environ.get("NEWSLETTER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NEWSLETTER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PASSWORD = "correct horse battery"
AIM_MS = 300


def seed(engine, size: int) -> None:
    dialect = engine.dialect.name
    # person i: status by i % 50; signed up (400 - i % 400) days ago, confirmed an hour later
    status = (
        "CASE WHEN i % 50 < 40 THEN 'active' WHEN i % 50 < 45 THEN 'pending' "
        "WHEN i % 50 < 49 THEN 'unsubscribed' ELSE 'erased' END"
    )
    if dialect == "postgresql":
        ago = "(now() at time zone 'utc') - make_interval(days => i % 400)"
        ago_hour = ago + " + interval '1 hour'"
        later = "(now() at time zone 'utc') - make_interval(days => (i % 400) / 2)"
    else:
        ago = "datetime('now', '-' || (i % 400) || ' days')"
        ago_hour = "datetime('now', '-' || (i % 400) || ' days', '+1 hour')"
        later = "datetime('now', '-' || ((i % 400) / 2) || ' days')"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (id, email, email_hash, status, created_at, frequency, time_zone) "
                + series(
                    dialect, size, f"i, 'p' || i || '@example.com', 'h' || i, {status}, {ago}, 'any', 'UTC'"
                )
            )
        )
        events = (
            ("1 = 1", "'signup_requested'", ago, "'{}'"),
            ("i % 50 < 40 OR i % 50 >= 45", "'confirmed'", ago_hour, "'{}'"),  # all but the pending
            ("i % 50 >= 45 AND i % 50 < 49", "'unsubscribed'", later, '\'{"scope": "everything"}\''),
            ("i % 50 = 49", "'erased'", later, "'{}'"),
        )
        for where, action, at, details in events:
            conn.execute(
                text(
                    "INSERT INTO consent_events "
                    "(subscriber_id, action, topics, occurred_at, source, details) "
                    + series(dialect, size, f"i, {action}, '[]', {at}, 'bench', {details}")
                    + f" WHERE {where}"
                )
            )
        conn.execute(
            text(
                "INSERT INTO suppressions (email_hash, reason, created_at, source, note) "
                "SELECT email_hash, CASE WHEN status = 'erased' THEN 'erased' ELSE 'unsubscribed' END, "
                f"{'now()' if dialect == 'postgresql' else 'CURRENT_TIMESTAMP'}, 'bench', '' "
                "FROM subscribers WHERE status IN ('unsubscribed', 'erased')"
            )
        )
        sent_at = (
            "(now() at time zone 'utc') - interval '3 days'"
            if dialect == "postgresql"
            else "datetime('now', '-3 days')"
        )
        conn.execute(
            text(
                "INSERT INTO campaigns (id, slug, name, topic_slug, status, content_hash, compiled, "
                f"scheduled_at, error_streak) VALUES (1, 'autumn', 'Autumn sale', 'newsletter', 'done', 'x', "
                f"'{{}}', {sent_at}, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO waves (id, campaign_id, position, name, audience, send_at, status, started_at) "
                f"VALUES (1, 1, 0, 'all', 'all', {sent_at}, 'done', {sent_at})"
            )
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (campaign_id, wave_id, subscriber_id, state, sent_at, attempts, "
                "bounce_kind, bounced_at, complained_at, updated_at) "
                f"SELECT 1, 1, id, 'sent', {sent_at}, 1, CASE WHEN id % 100 = 1 THEN 'hard' END, "
                f"CASE WHEN id % 100 = 1 THEN {sent_at} END, CASE WHEN id % 2000 = 2 THEN {sent_at} END, "
                f"{sent_at} FROM subscribers WHERE status = 'active'"
            )
        )
        for n, (where, kind) in enumerate(
            (("bounce_kind = 'hard'", "bounce_hard"), ("complained_at IS NOT NULL", "complaint"))
        ):
            conn.execute(
                text(
                    "INSERT INTO delivery_events (delivery_id, campaign_id, email_hash, kind, at, source, "
                    f"provider_event_id) SELECT id, 1, 'h', '{kind}', {sent_at}, 'bench', '{n}-' || id "
                    f"FROM deliveries WHERE {where}"
                )
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if dialect == "postgresql" else "ANALYZE"))


def more_events(engine, n: int) -> None:
    """``n`` new signups in the ledger since the last catch-up (what a cold request catches up)."""
    dialect = engine.dialect.name
    now = "(now() at time zone 'utc')" if dialect == "postgresql" else "CURRENT_TIMESTAMP"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO consent_events (subscriber_id, action, topics, occurred_at, source, details) "
                + series(dialect, n, f"i, 'signup_requested', '[]', {now}, 'bench', '{{}}'")
            )
        )


def make(url: str, redis_url: str, instance: Path):
    config = {
        "SECRET_KEY": "bench",
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "SMTP_URL": "smtp://127.0.0.1:1",
        "BASE_URL": "http://localhost",
        "OUTBOX_DIR": str(instance / "outbox"),
    }
    app = create_app(config)
    client = app.test_client()
    page = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    answer = client.post(
        "/admin/login", data={"csrf_token": token, "email": "viewer@store.example", "password": PASSWORD}
    )
    assert answer.status_code == 303, answer.status_code
    return app, client


def reference(app) -> float:
    """GET /admin/login with no session (signed in, it is a redirect): the stack's own cost."""
    return timed(app.test_client(), "/admin/login")


def timed(client, path: str) -> float:
    start = time.perf_counter()
    answer = client.get(path)
    ms = (time.perf_counter() - start) * 1000
    assert answer.status_code == 200, (path, answer.status_code)
    return ms


def run(url: str, size: int, runs: int, redis_url: str) -> None:
    instance = Path(tempfile.mkdtemp(prefix="nl-bench-overview-"))
    upgrade(url)
    engine = make_engine(url)
    start = time.perf_counter()
    seed(engine, size)
    with engine.connect() as conn:
        events = conn.execute(text("SELECT count(*) FROM consent_events")).scalar()
        deliveries = conn.execute(text("SELECT count(*) FROM deliveries")).scalar()
    print(
        f"  seeded {size:,} subscribers, {events:,} ledger events, {deliveries:,} deliveries "
        f"in {time.perf_counter() - start:.1f} s"
    )
    with Session(engine) as session:
        accounts.add_account(session, "viewer@store.example", Role.VIEWER, PASSWORD)
        session.commit()

    app, client = make(url, redis_url, instance)
    first = timed(client, "/admin/overview")
    html = client.get("/admin/overview").get_data(as_text=True)
    confirmed = re.search(r'id="total-confirmed">([^<]+)<', html).group(1)
    print(f"  first request (counts the whole ledger once): {first:8.1f} ms   confirmed shown: {confirmed}")
    app.extensions["newsletter"].engine.dispose()

    more_events(engine, 1000)
    app, client = make(url, redis_url, instance)
    cold_reference = reference(app)
    cold = timed(client, "/admin/overview")
    print(
        f"  cold (new app, 1,000 new events):  {cold:8.1f} ms   "
        f"reference GET /admin/login {cold_reference:6.1f} ms"
    )
    for days in (30, 365):
        page = f"/admin/overview?days={days}"
        client.get(page)
        figures = [timed(client, page) for _ in range(runs)]
        references = [reference(app) for _ in range(runs)]
        print(
            f"  warm {page:26} median {statistics.median(figures):6.1f} ms  min {min(figures):6.1f}  "
            f"max {max(figures):6.1f}   reference median {statistics.median(references):5.1f} ms"
            f"   aim < {AIM_MS} ms"
        )
    # a busy list: a signup lands before every request, so the charts are drawn afresh each time
    busy = []
    for _ in range(runs):
        more_events(engine, 1)
        busy.append(timed(client, "/admin/overview"))
    print(
        f"  busy (1 new event per request)    median {statistics.median(busy):6.1f} ms  "
        f"min {min(busy):6.1f}  "
        f"max {max(busy):6.1f}   aim < {AIM_MS} ms"
    )
    app.extensions["newsletter"].engine.dispose()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args()

    if not args.skip_sqlite:
        folder = Path(tempfile.mkdtemp(prefix="nl-bench-overview-"))
        print(f"SQLite, {args.size:,} subscribers:")
        try:
            run(f"sqlite:///{folder / 'bench.db'}", args.size, args.runs, args.redis_url)
        finally:
            for path in folder.glob("bench.db*"):
                path.unlink()
    if not args.skip_pg:
        admin = create_engine(args.pg_url.replace("postgresql://", "postgresql+psycopg://"))
        schema = f"nl_bench_overview_{uuid.uuid4().hex[:8]}"
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            print(f"\nPostgreSQL, {args.size:,} subscribers:")
            run(f"{args.pg_url}?options=-csearch_path%3D{schema}", args.size, args.runs, args.redis_url)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


if __name__ == "__main__":
    main()
