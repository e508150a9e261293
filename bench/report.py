"""Campaign report and auto-protection check at scale: 1M deliveries on PostgreSQL (100k on SQLite).

    python bench/report.py [--size 1000000] [--other 200000] [--runs 7] [--sqlite 100000]

Builds, in a scratch PostgreSQL schema (migrated like production), one campaign of ``--size``
deliveries in two waves next to another campaign of ``--other`` (so the report must find its
rows by index, not by reading the whole table), with ``INSERT ... SELECT generate_series``:
95% sent, the rest deferred, skipped, failed or queued; 2% hard and 1% soft bounces, 0.1%
complaints, 0.3% unsubscribes, 5% clicking (1-3 click events on 5 links), 1% scanner visits,
1% redemptions, with a ``delivery_events`` row per signal. Then times, as the median of
``--runs``: ``campaigns.report.report`` (both queries and the Python around them),
``feedback.protection.check`` (what every hard bounce and complaint costs), the single
aggregate over the summary columns a naive check would run, and the same-run reference
``SELECT count(*) FROM deliveries WHERE campaign_id = X`` (every row of the campaign
counted). Prints the EXPLAIN (ANALYZE) plans of the report's queries and of the check.
"""

from __future__ import annotations

import argparse
import os
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

from newsletter.campaigns.report import report  # noqa: E402
from newsletter.core.config import load_settings  # noqa: E402
from newsletter.core.db import make_engine  # noqa: E402
from newsletter.core.migrate import upgrade  # noqa: E402
from newsletter.feedback import protection  # noqa: E402
from newsletter.models import Campaign  # noqa: E402

PG_URL = os.environ.get("NEWSLETTER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test_report")
A, B = 1, 2  #: the campaign measured, and the other one


def series(dialect: str, n: int, columns: str) -> str:
    """``SELECT columns`` over i = 1..n: generate_series on PostgreSQL, a recursive CTE on SQLite."""
    if dialect == "postgresql":
        return f"SELECT {columns} FROM generate_series(1, {n}) AS g(i)"
    counter = f"WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n})"
    return f"{counter} SELECT {columns} FROM g"


def seed(engine, size: int, other: int) -> None:
    dialect = engine.dialect.name
    now = "CURRENT_TIMESTAMP"
    # deliveries' summary columns by i: a fixed pattern, so that the figures are reproducible
    state = (
        "CASE WHEN i % 100 < 95 THEN 'sent' WHEN i % 100 < 97 THEN 'deferred' "
        "WHEN i % 100 < 98 THEN 'skipped' WHEN i % 100 < 99 THEN 'failed' ELSE 'queued' END"
    )
    reason = (
        "CASE WHEN i % 100 IN (95, 96) THEN (CASE WHEN i % 2 = 0 THEN 'quiet hours' ELSE 'cap' END) "
        "WHEN i % 100 = 97 THEN 'suppressed' WHEN i % 100 = 98 THEN '550 5.1.1 user unknown' END"
    )
    sent = "i % 100 < 95"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (id, email, email_hash, status, created_at, frequency, time_zone) "
                + series(
                    dialect,
                    max(size, other),
                    f"i, 'p' || i || '@example.com', 'h' || i, 'active', {now}, 'any', 'UTC'",
                )
            )
        )
        for cid, slug in ((A, "measured"), (B, "other")):
            conn.execute(
                text(
                    "INSERT INTO campaigns (id, slug, name, topic_slug, status, content_hash, compiled, "
                    "scheduled_at, error_streak) VALUES "
                    f"({cid}, '{slug}', '{slug}', 'news', 'sending', 'x', '{{}}', {now}, 0)"
                )
            )
            for position, name in ((0, "vip"), (1, "everyone")):
                conn.execute(
                    text(
                        "INSERT INTO waves (id, campaign_id, position, name, audience, send_at, status) "
                        f"VALUES ({cid * 10 + position}, {cid}, {position}, '{name}', 'all', {now}, "
                        "'sending')"
                    )
                )
        for cid, n in ((A, size), (B, other)):
            columns = (
                f"{cid}, CASE WHEN i % 10 = 0 THEN {cid * 10} ELSE {cid * 10 + 1} END, i, {state}, {reason}, "
                f"CASE WHEN {sent} THEN {now} END, 1, "
                f"CASE WHEN {sent} AND i % 50 = 1 THEN 'hard' WHEN {sent} AND i % 100 = 2 THEN 'soft' END, "
                f"CASE WHEN {sent} AND (i % 50 = 1 OR i % 100 = 2) THEN {now} END, "
                f"CASE WHEN {sent} AND i % 1000 = 3 THEN {now} END, "
                f"CASE WHEN {sent} AND i % 20 = 4 THEN {now} END, "
                f"CASE WHEN {sent} AND i % 300 = 5 THEN {now} END, "
                f"CASE WHEN {sent} AND i % 100 = 6 THEN {now} END, {now}"
            )
            conn.execute(
                text(
                    "INSERT INTO deliveries (campaign_id, wave_id, subscriber_id, state, reason, sent_at, "
                    "attempts, bounce_kind, bounced_at, complained_at, first_click_at, unsubscribed_at, "
                    "redeemed_at, updated_at) " + series(dialect, n, columns)
                )
            )
        # one event per bounce, complaint, unsubscribe and scanner visit; 1-3 clicks per clicker
        events = (
            (
                "bounced_at IS NOT NULL",
                "CASE WHEN bounce_kind = 'hard' THEN 'bounce_hard' ELSE 'bounce_soft' END",
                "NULL",
            ),
            ("complained_at IS NOT NULL", "'complaint'", "NULL"),
            ("unsubscribed_at IS NOT NULL", "'unsubscribe'", "NULL"),
            ("first_click_at IS NOT NULL", "'click'", "(id / 20) % 5"),
            ("first_click_at IS NOT NULL AND id % 3 > 0", "'click'", "(id / 20 + 1) % 5"),
            ("first_click_at IS NOT NULL AND id % 3 > 1", "'click'", "(id / 20 + 2) % 5"),
            ("state = 'sent' AND id % 100 = 7", "'scanner'", "(id / 100) % 5"),
        )
        for n, (where, kind, link) in enumerate(events):
            conn.execute(
                text(
                    "INSERT INTO delivery_events (delivery_id, campaign_id, email_hash, kind, at, source, "
                    f"provider_event_id, link) SELECT id, campaign_id, 'h', {kind}, {now}, 'bench', "
                    f"'{n}-' || id, {link} FROM deliveries WHERE {where}"
                )
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if dialect == "postgresql" else "ANALYZE"))


def median_ms(fn, runs: int) -> float:
    fn()  # warm the cache: every figure is a warm one
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


NAIVE = (
    "SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE bounce_kind = 'hard'), "
    "count(complained_at) FROM deliveries WHERE campaign_id = :c"
)
NAIVE_SQLITE = (
    "SELECT sum(state = 'sent'), sum(bounce_kind = 'hard'), count(complained_at) "
    "FROM deliveries WHERE campaign_id = :c"
)


def measure(engine, settings, runs: int) -> dict[str, float]:
    dialect = engine.dialect.name
    with Session(engine) as session:
        campaign = session.get(Campaign, A)
        numbers = report(session, settings, campaign)
        t = numbers.total
        print(
            f"  campaign: {t.delivered} delivered, {t.bounced_hard} hard / {t.bounced_soft} soft bounces, "
            f"{t.complained} complaints, {t.unique_clicks} clickers, "
            f"{sum(link.clicks for link in numbers.links)} clicks, {len(numbers.links)} links"
        )
        figures = {
            "reference count(*)": median_ms(
                lambda: session.execute(
                    text("SELECT count(*) FROM deliveries WHERE campaign_id = :c"), {"c": A}
                ).scalar(),
                runs,
            ),
            "campaign report": median_ms(
                lambda: (session.expire_all(), report(session, settings, session.get(Campaign, A))), runs
            ),
            "protection check": median_ms(lambda: protection.check(session, settings, A), runs),
            "naive one-aggregate check": median_ms(
                lambda: session.execute(
                    text(NAIVE if dialect == "postgresql" else NAIVE_SQLITE), {"c": A}
                ).all(),
                runs,
            ),
        }
        session.rollback()
        assert session.get(Campaign, A).status.value == "sending"  # the check did not pause it
    return figures


def explain(engine, enough: int) -> None:
    dialect = engine.dialect.name
    prefix = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)" if dialect == "postgresql" else "EXPLAIN QUERY PLAN"
    with Session(engine) as session:
        queries = {
            "report: deliveries by wave, state, reason": (
                "SELECT wave_id, state, reason, count(*), count(CASE WHEN bounce_kind = 'hard' THEN 1 END), "
                "count(CASE WHEN bounce_kind = 'soft' THEN 1 END), count(complained_at), "
                "count(unsubscribed_at), count(opened_at), count(first_click_at), count(redeemed_at) "
                "FROM deliveries "
                f"WHERE campaign_id = {A} GROUP BY wave_id, state, reason"
            ),
            "report: clicks per link": (
                "SELECT link, kind, count(*) FROM delivery_events "
                f"WHERE campaign_id = {A} AND kind IN ('click', 'scanner') GROUP BY link, kind"
            ),
            "check: hard bounces and complaints": (
                "SELECT kind, count(DISTINCT delivery_id) FROM delivery_events "
                f"WHERE campaign_id = {A} AND kind IN ('complaint', 'bounce_hard') GROUP BY kind"
            ),
            "check: delivered, counted as far as needed": (
                "SELECT count(*) FROM (SELECT state FROM deliveries "
                f"WHERE campaign_id = {A} AND state = 'sent' LIMIT {enough}) AS enough"
            ),
        }
        for title, sql in queries.items():
            print(f"\n  -- {title}")
            for line, *rest in session.execute(text(f"{prefix} {sql}")).all():
                print("     " + (str(rest[-1]) if dialect == "sqlite" else str(line)))


def run(url: str, size: int, other: int, runs: int) -> None:
    settings = load_settings(
        tempfile.mkdtemp(prefix="nl-bench-report-"), environ={}, overrides={"SECRET_KEY": "x"}
    )
    upgrade(url)
    engine = make_engine(url)
    start = time.perf_counter()
    seed(engine, size, other)
    print(f"  seeded {size:,} + {other:,} deliveries in {time.perf_counter() - start:.1f} s")
    figures = measure(engine, settings, runs)
    reference = figures["reference count(*)"]
    for name, ms in figures.items():
        print(f"  {name:28} {ms:9.1f} ms   {ms / reference:5.2f}x the reference")
    with Session(engine) as session:
        total = report(session, settings, session.get(Campaign, A)).total
    enough = max(
        settings.rate_min_sample,
        protection._needed(total.complained, settings.max_complaint_rate),
        protection._needed(total.bounced_hard, settings.max_bounce_rate),
    )
    explain(engine, enough)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--other", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sqlite", type=int, default=100_000, help="size on SQLite (0: skip)")
    args = parser.parse_args()

    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    schema = f"nl_bench_report_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        print(f"PostgreSQL, {args.size:,} deliveries (median of {args.runs}, warm):")
        run(f"{PG_URL}?options=-csearch_path%3D{schema}", args.size, args.other, args.runs)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    if args.sqlite:
        folder = Path(tempfile.mkdtemp(prefix="nl-bench-report-"))
        print(f"\nSQLite, {args.sqlite:,} deliveries (median of {args.runs}, warm):")
        run(f"sqlite:///{folder / 'bench.db'}", args.sqlite, args.sqlite // 5, args.runs)


if __name__ == "__main__":
    main()
