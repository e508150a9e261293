"""Import of a signed partner file at 100k, 250k and 1M records, next to a plain loader.

Generates the signed file (streamed), then imports it in a fresh child process each time, on
a fresh database, through the same service the CLI uses: the signature pass, the validation
pass, then chunks of 1,000 records each applied and checkpointed in its own transaction
(subscribers, topics, invitations, ledger rows, outbox rows) and the RQ enqueue of each
chunk's invitations after its commit. The same-run reference loads the same file's rows into
the same ``subscribers`` table of another fresh database with the plainest fast path: read,
decode, hash, then PostgreSQL ``COPY`` (SQLite: one ``executemany`` INSERT), one transaction.
Peak memory is each child's maximum RSS, so each figure stands alone.

    python bench/partners.py [--records 100000 250000 1000000] [--sqlite | --pg] [--runs 3]

Environment: NEWSLETTER_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/test) and
NEWSLETTER_BENCH_REDIS_URL (default redis://127.0.0.1:6379/14; it is flushed).
Aim: 1M records on PostgreSQL in under 10 minutes, records/s and peak RSS flat with the size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import runs  # noqa: E402
from bench.runs import spread  # noqa: E402
from newsletter.core import clock  # noqa: E402
from newsletter.core.migrate import upgrade  # noqa: E402
from newsletter.partners import files  # noqa: E402

PG_URL = os.environ.get("NEWSLETTER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NEWSLETTER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET = "bench-secret-" + "x" * 40


def generate(path: Path, count: int) -> None:
    given = files.iso(clock.now())

    def records():
        for i in range(count):
            yield {
                "email": f"person{i}@example.com",
                "first_name": "Alex",
                "consent": {
                    "to": "store-b",
                    "to_name": "Store B",
                    "given_at": given,
                    "wording_version": "partner-share-2026-11",
                    "wording_sha256": "a" * 64,
                },
                "source": "store-a:web:subscribe",
            }

    with open(path, "wb") as handle:
        for chunk in files.write_signed(files.CONTACTS, "store-a", "store-b", SECRET, records()):
            handle.write(chunk)


def _runtime(database_url: str):
    from newsletter.core.config import load_settings
    from newsletter.core.runtime import Runtime

    overrides = {
        "STORE_ID": "store-b",
        "QUEUE_SYNC": False,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": "bench-" + "k" * 32,
    }
    # environ={}: the bench's own NEWSLETTER_BENCH_* variables are not engine settings
    with tempfile.TemporaryDirectory() as instance:
        return Runtime.from_settings(load_settings(instance, environ={}, overrides=overrides))


def child(database_url: str, path: str) -> None:
    """Import one file into a migrated database; print a JSON line with the figures."""
    from newsletter.models import Partner
    from newsletter.partners import exchange
    from newsletter.partners.invitations import enqueue_invitations
    from newsletter.partners.registry import add_partner

    runtime = _runtime(database_url)
    with runtime.sessions() as session:
        add_partner(session, "store-a", "Store A", SECRET)
        session.commit()
    start = time.perf_counter()
    with runtime.sessions() as session, open(path, "rb") as handle:
        report = exchange.import_contacts(
            session,
            runtime.settings,
            session.get(Partner, "store-a"),
            handle,
            channel="bench",
            dispatch=lambda ids: enqueue_invitations(runtime, ids),
        )
    seconds = time.perf_counter() - start
    peak_mb = runs.peak_rss_mb()
    print(json.dumps({"invited": report.invited, "seconds": seconds, "peak_mb": peak_mb}))


def reference(database_url: str, path: str) -> None:
    """The plain loader: the file's rows into ``subscribers`` (COPY / executemany), one transaction."""
    from newsletter.core.db import make_engine
    from newsletter.models.subscribers import address_hash

    engine = make_engine(database_url)
    start = time.perf_counter()
    now = clock.now()
    columns = ("email", "email_hash", "first_name", "status", "created_at", "frequency", "time_zone")

    def rows():
        with open(path, "rb") as handle:
            next(handle)
            for line in handle:
                record = json.loads(line)
                if record.get("type") == "trailer":
                    return
                email = record["email"].lower()
                yield (email, address_hash(email), record["first_name"], "pending", now, "any", "UTC")

    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        if engine.dialect.name == "postgresql":
            with raw.cursor().copy(f"COPY subscribers ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows():
                    copy.write_row(row)
        else:
            raw.executemany(
                f"INSERT INTO subscribers ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                rows(),
            )
    seconds = time.perf_counter() - start
    engine.dispose()
    peak_mb = runs.peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def _run(mode: str, kind: str, workdir: Path, path: Path) -> dict:
    url, drop = runs.fresh_database(kind, workdir, PG_URL, upgrade)
    try:
        out = subprocess.run(
            [sys.executable, __file__, mode, url, str(path)], check=True, capture_output=True, text=True
        ).stdout
    finally:
        drop()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[100_000, 250_000, 1_000_000])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--sqlite", action="store_const", const="sqlite", dest="db")
    group.add_argument("--pg", action="store_const", const="postgresql", dest="db")
    parser.add_argument("--runs", type=int, default=1, help="runs per size and database (min/median/max)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--reference", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.reference:
        reference(*args.reference)
        return
    kinds = [args.db] if args.db else ["sqlite", "postgresql"]
    conn = redis.Redis.from_url(REDIS_URL)
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for count in args.records:
            path = workdir / f"contacts-{count}.jsonl"
            started = time.perf_counter()
            generate(path, count)
            size_mb, took = path.stat().st_size / 1e6, time.perf_counter() - started
            print(f"{count:>9,} records: signed file of {size_mb:.1f} MB written in {took:.1f} s", flush=True)
            for kind in kinds:
                rates, peaks, ref_rates, ref_peaks = [], [], [], []
                for _ in range(args.runs):
                    conn.flushdb()
                    figures = _run("--child", kind, workdir, path)
                    jobs = conn.llen("rq:queue:transactional")
                    ref = _run("--reference", kind, workdir, path)
                    rates.append(count / figures["seconds"])
                    peaks.append(figures["peak_mb"])
                    ref_rates.append(count / ref["seconds"])
                    ref_peaks.append(ref["peak_mb"])
                    print(
                        f"    {kind:<10} import: {figures['seconds']:6.1f} s ({rates[-1]:,.0f} records/s), "
                        f"peak RSS {figures['peak_mb']:.0f} MB, {figures['invited']:,} invited, {jobs} jobs"
                        f" | reference {ref['seconds']:5.1f} s ({ref_rates[-1]:,.0f}/s), "
                        f"peak RSS {ref['peak_mb']:.0f} MB | ratio {rates[-1] / ref_rates[-1]:.2f}",
                        flush=True,
                    )
                summary.append((count, kind, rates, peaks, ref_rates, ref_peaks))
    conn.flushdb()
    print("\nmin/median/max over", args.runs, "run(s): records/s, peak RSS MB; reference records/s")
    for count, kind, rates, peaks, ref_rates, ref_peaks in summary:
        print(
            f"  {count:>9,} {kind:<10} import {spread(rates, ',.0f')} rec/s, {spread(peaks, '.0f')} MB"
            f" | reference {spread(ref_rates, ',.0f')} rec/s, {spread(ref_peaks, '.0f')} MB"
        )


if __name__ == "__main__":
    main()
