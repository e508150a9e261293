"""The dashboard's people pages at 1,000,000 subscribers on PostgreSQL, next to GET /admin/login.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/13 python bench/dashboard_people.py [--size N] [--runs 15]

Builds, in a scratch PostgreSQL schema (migrated like production; BENCH_PG_URL names the database,
BENCH_REDIS_URL the Redis database it flushes; not NEWSLETTER_*, which the app reads as settings),
``--size`` subscribers with random-looking addresses in mixed letter case, one subscription and
one consent event each, and a suppression for every tenth. Then signs in a viewer through the
real sign-in page and times whole requests through the Flask test client (routing, session, the
queries, Jinja), as the median of ``--runs`` warm runs: the same-run reference GET /admin/login
(a page without a query), searches by a one-letter prefix (the first of ~60,000 matches), a
four-character prefix, a whole address in other letter case, the next page of a search and a
page from the middle of the address order, the list without a query, a profile, the suppression
list (all, by reason, one address) and the partners page. Prints the EXPLAIN (ANALYZE) plan of a
search: a range of ix_subscribers_address_key, stopped by its LIMIT.
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
from html import unescape
from pathlib import Path

from sqlalchemy import create_engine, event, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter import create_app  # noqa: E402
from newsletter.admin import accounts  # noqa: E402
from newsletter.core.migrate import upgrade  # noqa: E402
from newsletter.models import Role  # noqa: E402

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test_people")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PASSWORD = "bench password long enough"


def seed(url: str, size: int) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    # an address: 8 hex digits of md5(i), the number, a domain; every third one capitalised
    email = (
        "CASE WHEN i % 3 = 0 THEN upper(substr(md5(i::text), 1, 1)) ELSE substr(md5(i::text), 1, 1) END"
        " || substr(md5(i::text), 2, 7) || '.' || i || '@'"
        " || (ARRAY['example.com', 'example.net', 'shop.example.org'])[i % 3 + 1]"
    )
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (id, email, email_hash, status, created_at, confirmed_at, "
                f"frequency, time_zone) SELECT i, {email}, md5(i::text) || md5((-i)::text), "
                "CASE WHEN i % 20 = 0 THEN 'unsubscribed' WHEN i % 50 = 1 THEN 'pending' ELSE 'active' END, "
                "now() - (i || ' seconds')::interval, now(), 'any', 'UTC' FROM generate_series(1, :n) AS g(i)"
            ),
            {"n": size},
        )
        conn.execute(text("SELECT setval('subscribers_id_seq', :n)"), {"n": size})
        conn.execute(
            text(
                "INSERT INTO subscriptions (subscriber_id, topic_id, status, updated_at) "
                "SELECT id, (SELECT id FROM topics WHERE slug = 'newsletter'), 'active', now() "
                "FROM subscribers"
            )
        )
        conn.execute(
            text(
                "INSERT INTO consent_events (subscriber_id, action, topics, occurred_at, source, "
                "wording_version, details) SELECT id, 'signup_requested', '[\"newsletter\"]', created_at, "
                "'web:subscribe', 'signup-2026-11', '{}' FROM subscribers"
            )
        )
        conn.execute(
            text(
                "INSERT INTO suppressions (email_hash, reason, created_at, source, note) SELECT email_hash, "
                "CASE WHEN id % 30 = 0 THEN 'manual' ELSE 'unsubscribed' END, now(), 'bench', '' "
                "FROM subscribers WHERE id % 10 = 0"
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def queries_of(engine, client, path: str) -> int:
    """How many SQL statements one request of ``path`` runs (each a round trip to the server)."""
    seen = []

    def count(*_args) -> None:
        seen.append(1)

    event.listen(engine, "before_cursor_execute", count)
    try:
        client.get(path)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(seen)


def round_trip_ms(engine, runs: int) -> float:
    """The same-run cost of one ``SELECT 1``: what each statement of a page costs at least."""
    with engine.connect() as conn:
        times = []
        for _ in range(runs * 10):
            start = time.perf_counter()
            conn.exec_driver_sql("SELECT 1").scalar()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def median_ms(client, path: str, runs: int) -> float:
    answer = client.get(path)  # warm; and every figure is of a page that answered 200
    assert answer.status_code == 200, (path, answer.status_code)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        client.get(path)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def run(url: str, size: int, runs: int) -> None:
    app = create_app(
        {
            "SECRET_KEY": "bench",
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "BASE_URL": "http://bench.test",
            "OUTBOX_DIR": tempfile.mkdtemp(prefix="nl-bench-people-"),
        }
    )
    runtime = app.extensions["newsletter"]
    runtime.redis.flushdb()
    with runtime.sessions() as session:
        accounts.add_account(session, "vic@store.example", Role.VIEWER, PASSWORD)
        session.commit()
        middle = session.execute(
            text("SELECT id, email FROM subscribers WHERE id = :i"), {"i": size // 2}
        ).one()
    client = app.test_client()
    page = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    signed = client.post(
        "/admin/login", data={"csrf_token": token, "email": "vic@store.example", "password": PASSWORD}
    )
    assert signed.status_code == 303, signed.status_code
    first = client.get("/admin/subscribers?q=a").get_data(as_text=True)
    next_page = unescape(re.search(r'<a href="([^"]+)" rel="next"', first).group(1))
    shown = len(re.findall(r'<tr id="subscriber-', first))
    print(f"  a search for 'a' shows {shown} rows a page; next page: {next_page}")
    paths = {
        "GET /admin/login (reference)": "/admin/login",
        "search 'a' (first page)": "/admin/subscribers?q=a",
        "search 'a', next page": next_page,
        "search 'b3f0'": "/admin/subscribers?q=b3f0",
        "search a whole address, other case": f"/admin/subscribers?q={middle.email.swapcase()}",
        "search, page from the middle": f"/admin/subscribers?q=&after={middle.id}",
        "search page after a middle address": f"/admin/subscribers?q={middle.email[0]}&after={middle.id}",
        "everyone, newest first": "/admin/subscribers",
        "a profile": f"/admin/subscribers/{middle.id}",
        "suppressions": "/admin/suppressions",
        "suppressions, reason manual": "/admin/suppressions?reason=manual",
        "suppressions, one address": f"/admin/suppressions?q={middle.email}",
        "partners": "/admin/partners",
    }
    anonymous = app.test_client()  # the sign-in page redirects a signed-in account
    figures = {
        name: median_ms(anonymous if path == "/admin/login" else client, path, runs)
        for name, path in paths.items()
    }
    reference = figures["GET /admin/login (reference)"]
    trip = round_trip_ms(runtime.engine, runs)
    print(f"  one SELECT 1 round trip: {trip:.2f} ms (the database server's load shows here)")
    for name, ms in figures.items():
        n = queries_of(runtime.engine, anonymous if paths[name] == "/admin/login" else client, paths[name])
        print(f"  {name:38} {ms:7.1f} ms   {ms / reference:5.2f}x the reference   {n:2} statements")
    with runtime.engine.connect() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, COSTS OFF) SELECT id, email FROM subscribers "
            "WHERE lower(email) COLLATE \"C\" >= 'a' AND lower(email) COLLATE \"C\" < 'b' "
            'ORDER BY lower(email) COLLATE "C", id LIMIT 51'
        )
        print("\n  -- the search's plan")
        for (line,) in plan:
            print("     " + line)
    runtime.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    schema = f"nl_bench_people_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        upgrade(url)
        start = time.perf_counter()
        seed(url, args.size)
        print(
            f"PostgreSQL, {args.size:,} subscribers (seeded in {time.perf_counter() - start:.0f} s; "
            f"median of {args.runs}, warm):"
        )
        run(url, args.size, args.runs)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


if __name__ == "__main__":
    main()
