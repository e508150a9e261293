"""The dashboard's campaign page and campaigns list at scale: a sent campaign of 1,000,000 deliveries.

    python bench/dashboard_campaign.py [--size 1000000] [--runs 9] [--sqlite 1000000]
        [--pg-url URL] [--redis-url URL]

``--pg-url`` (or ``NEWSLETTER_BENCH_PG_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``):
a scratch schema is made in that database, migrated like production, and dropped at the end.
``--redis-url`` (or ``NEWSLETTER_BENCH_REDIS_URL``): the sign-in's rate limiter. SQLite runs in a
temporary file (``--sqlite 0`` skips it).

Builds with bulk ``INSERT ... SELECT`` one campaign of ``--size`` deliveries in two waves, sent
over five days, next to another campaign of a fifth of the size: 95% sent, the rest deferred,
skipped (three reasons), failed or queued; 2% hard and 1% soft bounces, 0.1% complaints, 0.3%
unsubscribes, 5% clicking (1-3 click events on 5 links), 1% scanner visits, 1% early-access
redemptions, reward codes on 30% (1% redeemed). The triggers count every row as it goes in; then
the worker's fold runs once (timed). Then it times, signed in through the login form, as
min/median/max of ``--runs`` warm GETs with Flask's test client: /admin/login (the same-run
reference: a page with no data), /admin/campaigns and /admin/campaigns/<slug>; then
``campaign report`` from the tallies, and the GROUP BY over the campaign's deliveries that every
view of the page and of the list ran before (``report.delivery_groups``); then the page again
after 20,000 more rows changed state without a fold (what a page sees between two ticks of a
busy send).
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
from newsletter.admin import accounts, campaign_page  # noqa: E402
from newsletter.campaigns import tallies  # noqa: E402
from newsletter.campaigns.report import delivery_groups, report  # noqa: E402
from newsletter.core.migrate import upgrade  # noqa: E402
from newsletter.models import Campaign, Role  # noqa: E402

PG_URL = os.environ.get("NEWSLETTER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NEWSLETTER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
A, B = 1, 2
EMAIL, PASSWORD = "bench@store.example", "bench password 123"


def _at(dialect: str, minutes: str) -> str:
    """Five days ago plus MINUTES, as the dialect writes a timestamp."""
    if dialect == "postgresql":
        return f"(LOCALTIMESTAMP - interval '5 days' + ({minutes}) * interval '1 minute')"
    return f"datetime('now', '-5 days', '+' || ({minutes}) || ' minutes')"


def seed(engine, size: int) -> None:
    dialect = engine.dialect.name
    now = "CURRENT_TIMESTAMP"
    other = size // 5
    state = (
        "CASE WHEN i % 100 < 95 THEN 'sent' WHEN i % 100 < 97 THEN 'deferred' "
        "WHEN i % 100 < 98 THEN 'skipped' WHEN i % 100 < 99 THEN 'failed' ELSE 'queued' END"
    )
    reason = (
        "CASE WHEN i % 100 IN (95, 96) THEN "
        "(CASE WHEN i % 2 = 0 THEN 'quiet hours' ELSE 'cap: 2 per week' END) "
        "WHEN i % 100 = 97 THEN (CASE WHEN i % 3 = 0 THEN 'suppressed' WHEN i % 3 = 1 THEN 'unsubscribed' "
        "ELSE 'capped: next allowed after the deadline' END) "
        "WHEN i % 100 = 98 THEN '550 5.1.1 user unknown' END"
    )
    sent = "i % 100 < 95"
    # sends spread over five days (more in the first hours), feedback an hour later
    sent_at = _at(dialect, "CASE WHEN i % 3 = 0 THEN i % 7200 ELSE i % 360 END")
    later = _at(dialect, "CASE WHEN i % 3 = 0 THEN i % 7200 ELSE i % 360 END + 60")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (id, email, email_hash, status, created_at, frequency, time_zone) "
                + series(dialect, size, f"i, 'p' || i || '@x.test', 'h' || i, 'active', {now}, 'any', 'UTC'")
            )
        )
        for cid, slug in ((A, "measured"), (B, "other")):
            conn.execute(
                text(
                    "INSERT INTO campaigns (id, slug, name, topic_slug, status, content_hash, compiled, "
                    "scheduled_at, error_streak, sale_url) VALUES "
                    f"({cid}, '{slug}', 'Spring sale {slug}', 'news', 'sending', 'x', '{{}}', {now}, 0, "
                    "'https://shop.example/spring')"
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
                f"CASE WHEN {sent} THEN {sent_at} END, 1, "
                f"CASE WHEN {sent} AND i % 50 = 1 THEN 'hard' WHEN {sent} AND i % 100 = 2 THEN 'soft' END, "
                f"CASE WHEN {sent} AND (i % 50 = 1 OR i % 100 = 2) THEN {later} END, "
                f"CASE WHEN {sent} AND i % 1000 = 3 THEN {later} END, "
                f"CASE WHEN {sent} AND i % 20 = 4 THEN {later} END, "
                f"CASE WHEN {sent} AND i % 300 = 5 THEN {later} END, "
                f"CASE WHEN {sent} AND i % 100 = 6 THEN {later} END, "
                f"CASE WHEN {sent} AND i % 10 < 3 THEN 'VIP-' || i END, "
                f"CASE WHEN {sent} AND i % 100 = 11 THEN {later} END, {now}"
            )
            conn.execute(
                text(
                    "INSERT INTO deliveries (campaign_id, wave_id, subscriber_id, state, reason, sent_at, "
                    "attempts, bounce_kind, bounced_at, complained_at, first_click_at, unsubscribed_at, "
                    "redeemed_at, reward_code, reward_redeemed_at, updated_at) " + series(dialect, n, columns)
                )
            )
        events = (
            (
                "bounced_at IS NOT NULL",
                "CASE WHEN bounce_kind = 'hard' THEN 'bounce_hard' ELSE 'bounce_soft' END",
                "NULL",
                "bounced_at",
            ),
            ("complained_at IS NOT NULL", "'complaint'", "NULL", "complained_at"),
            ("unsubscribed_at IS NOT NULL", "'unsubscribe'", "NULL", "unsubscribed_at"),
            ("first_click_at IS NOT NULL", "'click'", "(id / 20) % 5", "first_click_at"),
            ("first_click_at IS NOT NULL AND id % 3 > 0", "'click'", "(id / 20 + 1) % 5", "first_click_at"),
            ("first_click_at IS NOT NULL AND id % 3 > 1", "'click'", "(id / 20 + 2) % 5", "first_click_at"),
            ("state = 'sent' AND id % 100 = 7", "'scanner'", "(id / 100) % 5", "sent_at"),
        )
        for k, (where, kind, link, at) in enumerate(events):
            conn.execute(
                text(
                    "INSERT INTO delivery_events (delivery_id, campaign_id, email_hash, kind, at, source, "
                    f"provider_event_id, link) SELECT id, campaign_id, 'h', {kind}, {at}, 'bench', "
                    f"'{k}-' || id, {link} FROM deliveries WHERE {where}"
                )
            )


def timed(fn, runs: int) -> tuple[float, float, float]:
    fn()  # warm
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times), max(times)


def signed_in_client(app):
    client = app.test_client()
    page = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    answer = client.post("/admin/login", data={"csrf_token": token, "email": EMAIL, "password": PASSWORD})
    assert answer.status_code == 303, answer.status_code
    return client


def get(client, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 200, (path, answer.status_code)


def run(url: str, redis_url: str, size: int, runs: int) -> None:
    upgrade(url)
    instance = tempfile.mkdtemp(prefix="nl-bench-dashboard-")
    app = create_app(
        {
            "SECRET_KEY": "bench",
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "BASE_URL": "https://newsletter.test",
            "OUTBOX_DIR": instance,
        }
    )
    runtime = app.extensions["newsletter"]
    engine = runtime.engine
    start = time.perf_counter()
    seed(engine, size)
    took = time.perf_counter() - start
    print(f"  seeded {size:,} + {size // 5:,} deliveries (and their events) in {took:.1f} s")
    with Session(engine) as session:
        start = time.perf_counter()
        tallies.fold(session)
        print(f"  first fold of the tallies (the worker's maintenance): {time.perf_counter() - start:.1f} s")
        accounts.add_account(session, EMAIL, Role.VIEWER, PASSWORD)
        session.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    runtime.redis.delete(*runtime.redis.keys("nl:admin:*") or ["-"])
    client = signed_in_client(app)
    rows = []
    anonymous = app.test_client()  # the login page as a stranger sees it: no data read
    rows.append(("GET /admin/login (reference)", timed(lambda: get(anonymous, "/admin/login"), runs)))
    rows.append(("GET /admin/campaigns", timed(lambda: get(client, "/admin/campaigns"), runs)))
    page = "/admin/campaigns/measured"
    rows.append((f"GET {page}", timed(lambda: get(client, page), runs)))

    def first_view() -> None:
        campaign_page._DRAWN.clear()  # as after a change of the numbers: every chart drawn again
        get(client, page)

    rows.append(("  the same, first view after a change", timed(first_view, max(3, runs // 3))))
    with Session(engine) as session:
        settings = runtime.settings

        def numbers(recount: bool):
            session.expire_all()
            return report(session, settings, session.get(Campaign, A), recount=recount)

        rows.append(("campaign report (tallies)", timed(lambda: numbers(False), runs)))
        # what every view of the page and of the list read before: the GROUP BY over the deliveries
        rows.append(("GROUP BY the deliveries (before)", timed(lambda: delivery_groups(session, A), 3)))
        assert numbers(False).to_json() == numbers(True).to_json(), "the tallies differ from a recount"
        # a busy send between two ticks: 20,000 rows change state in 40 statements, nothing folded
        move = text("UPDATE deliveries SET state = 'sending' WHERE campaign_id = :c AND id BETWEEN :a AND :z")
        for first in range(1, 20_001, 500):
            session.execute(move, {"c": A, "a": first, "z": first + 499})
            session.commit()
        count = text("SELECT count(*) FROM delivery_tallies WHERE campaign_id = :c")
        pending = session.scalar(count, {"c": A})
    rows.append((f"GET the campaign, {pending} tally rows unfolded", timed(lambda: get(client, page), runs)))
    reference = rows[0][1][1]
    print(f"  {'':44} {'min':>8} {'median':>8} {'max':>8}   median / reference")
    for name, (low, mid, high) in rows:
        print(f"  {name:44} {low:6.1f}ms {mid:6.1f}ms {high:6.1f}ms   {mid / reference:6.2f}x")
    with Session(engine) as session:
        fast, slow = report(session, settings, session.get(Campaign, A)), None
        slow = report(session, settings, session.get(Campaign, A), recount=True)
        assert fast.to_json() == slow.to_json(), "the tallies differ from a recount after the send"
        t = fast.total
        print(
            f"  the campaign: {t.delivered:,} delivered, {t.bounced_hard:,} hard bounces, "
            f"{t.unique_clicks:,} clicking, {t.redemptions:,} redemptions, codes {fast.reward_codes}; "
            "equal to a recount"
        )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--sqlite", type=int, default=1_000_000, help="size on SQLite (0: skip)")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args()
    if not args.skip_pg:
        admin = create_engine(args.pg_url.replace("postgresql://", "postgresql+psycopg://"))
        schema = f"nl_bench_dashboard_{uuid.uuid4().hex[:8]}"
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            print(f"PostgreSQL, {args.size:,} deliveries ({args.runs} warm runs):")
            run(f"{args.pg_url}?options=-csearch_path%3D{schema}", args.redis_url, args.size, args.runs)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
    if args.sqlite:
        with tempfile.TemporaryDirectory() as folder:
            print(f"SQLite, {args.sqlite:,} deliveries ({args.runs} warm runs):")
            run(f"sqlite:///{folder}/bench.sqlite3", args.redis_url, args.sqlite, args.runs)


if __name__ == "__main__":
    main()
