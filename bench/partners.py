"""Import of a signed partner file: time and peak memory for 100,000 records and a bigger file.

Generates the signed file (streamed), then imports it in a fresh child process each time, on
a fresh database, through the same service the CLI uses: verify pass, then validation,
subscribers, topics, invitations, ledger rows and outbox rows in one transaction, and the
RQ enqueue of the invitations (jobs of 200) after the commit. Peak memory is the child's
maximum RSS, so each figure stands alone.

    python bench/partners.py [--records 100000 250000] [--sqlite | --pg]

Aim: under a minute for 100k, under 200 MB, and memory that does not grow with the file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def child(database_url: str, path: str) -> None:
    """Import one file into a migrated database; print a JSON line with the figures."""
    from newsletter.core.db import make_engine, make_session_factory
    from newsletter.core.runtime import Runtime
    from newsletter.partners import exchange
    from newsletter.partners.invitations import enqueue_invitations
    from newsletter.partners.registry import add_partner

    config = {
        "STORE_ID": "store-b",
        "QUEUE_SYNC": False,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
    }
    engine = make_engine(database_url)
    runtime = Runtime(config, engine, make_session_factory(engine), redis.Redis.from_url(REDIS_URL))
    sessions = runtime.sessions
    with sessions() as session:
        partner, _ = add_partner(session, "store-a", "Store A", SECRET)
        session.commit()
    start = time.perf_counter()
    with sessions() as session, open(path, "rb") as handle:
        report = exchange.import_contacts(
            session,
            config,
            session.get(type(partner), "store-a"),
            handle,
            channel="bench",
            dispatch=lambda ids: enqueue_invitations(runtime, ids),
        )
        session.commit()
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"invited": report.invited, "seconds": seconds, "peak_mb": peak_mb}))


def fresh_database(kind: str, workdir: Path) -> tuple[str, callable]:
    if kind == "sqlite":
        url = f"sqlite:///{workdir / f'{uuid.uuid4().hex}.sqlite3'}"
        upgrade(url)
        return url, lambda: None
    schema = f"nl_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    upgrade(url)

    def drop():
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    return url, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[100_000, 250_000])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--sqlite", action="store_const", const="sqlite", dest="db")
    group.add_argument("--pg", action="store_const", const="postgresql", dest="db")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    kinds = [args.db] if args.db else ["sqlite", "postgresql"]
    conn = redis.Redis.from_url(REDIS_URL)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for count in args.records:
            path = workdir / f"contacts-{count}.jsonl"
            started = time.perf_counter()
            generate(path, count)
            size_mb, took = path.stat().st_size / 1e6, time.perf_counter() - started
            print(f"{count:>9,} records: signed file of {size_mb:.1f} MB written in {took:.1f} s")
            for kind in kinds:
                conn.flushdb()
                url, drop = fresh_database(kind, workdir)
                try:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", url, str(path)],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                finally:
                    drop()
                figures = json.loads(out.strip().splitlines()[-1])
                jobs = conn.llen("rq:queue:transactional")
                print(
                    f"    {kind:<10} import: {figures['seconds']:6.1f} s "
                    f"({count / figures['seconds']:,.0f} records/s), peak RSS {figures['peak_mb']:.0f} MB, "
                    f"{figures['invited']:,} invited in {jobs} RQ jobs"
                )
    conn.flushdb()


if __name__ == "__main__":
    main()
