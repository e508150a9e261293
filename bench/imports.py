"""``newsletter subscribers import``: rows/s and peak RSS as the file grows (100k, 1M rows).

Writes a CSV (nine rows in ten with consent evidence, one in ten without, so a confirmation
is queued for it; one row in a hundred repeats an earlier address), then runs the real
command in a fresh child process on a fresh database each time. Peak RSS is that child's
(``wait4``), so each figure stands alone. The same-run reference is the command's floor: the
same child starting the app and reading the same file with ``csv.DictReader``.

    python bench/imports.py [--rows 100000 1000000] [--sqlite | --pg] [--runs 3] [--code DIR]

``--code DIR`` runs another checkout's ``newsletter`` (the figures before a change). Environment:
NEWSLETTER_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/test) and
NEWSLETTER_BENCH_REDIS_URL (default redis://127.0.0.1:6379/14; it is flushed). They are read
here and never passed to the child, whose settings are its own NEWSLETTER_* variables.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench.runs; the child's newsletter comes from --code (PYTHONPATH)

from bench import runs  # noqa: E402
from bench.runs import spread  # noqa: E402

PG_URL = os.environ.get("NEWSLETTER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NEWSLETTER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
READ_ONLY = (
    "import csv, sys; from newsletter import create_app; create_app(); "
    "print(sum(1 for _ in csv.DictReader(open(sys.argv[1], encoding='utf-8-sig', newline=''))))"
)


def generate(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("email,first_name,consented_at,consent_source\n")
        for i in range(rows):
            n = i - 50 if i % 100 == 99 else i  # a repeat of an address fifty rows before
            if n % 10 == 3:
                handle.write(f"person{n}@example.com,Alex,,\n")
            else:
                handle.write(f"person{n}@example.com,Alex,2026-06-01T10:00:00Z,web form\n")


def fresh_database(kind: str, workdir: Path, env: dict) -> tuple[str, callable]:
    """Migrated by the checkout under test, in a child (this process imports no ``newsletter``)."""
    migrate = [
        sys.executable,
        "-c",
        "import sys; from newsletter.core.migrate import upgrade; upgrade(sys.argv[1])",
    ]
    return runs.fresh_database(
        kind, workdir, PG_URL, lambda url: subprocess.run([*migrate, url], check=True, env=env, cwd=workdir)
    )


def run(argv: list[str], env: dict, cwd: Path) -> tuple[float, float, str]:
    """Seconds and peak RSS (MB) of one child process, and its output.

    ``cwd`` is not a checkout: ``python -c`` puts the working directory before PYTHONPATH, so run
    from a checkout's root the child would import that checkout's ``newsletter``, not --code's.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv[:4])} failed ({proc.returncode}):\n{output[-2000:]}")
    return seconds, runs.peak_rss_mb(usage), output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--sqlite", action="store_const", const="sqlite", dest="db")
    group.add_argument("--pg", action="store_const", const="postgresql", dest="db")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose newsletter to run")
    args = parser.parse_args()
    kinds = [args.db] if args.db else ["sqlite", "postgresql"]
    conn = redis.Redis.from_url(REDIS_URL)
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update(
            PYTHONPATH=str(args.code.resolve()),
            NEWSLETTER_INSTANCE_PATH=str(workdir / "instance"),
            NEWSLETTER_SECRET_KEY="bench-" + "k" * 32,
            NEWSLETTER_REDIS_URL=REDIS_URL,
            NEWSLETTER_BASE_URL="https://newsletter.test",
        )
        print(f"code: {args.code.resolve()}")
        for rows in args.rows:
            path = workdir / f"list-{rows}.csv"
            generate(path, rows)
            print(f"{rows:>9,} rows: {path.stat().st_size / 1e6:.1f} MB", flush=True)
            for kind in kinds:
                rates, peaks, ref_peaks = [], [], []
                for _ in range(args.runs):
                    conn.flushdb()
                    url, drop = fresh_database(kind, workdir, env)
                    child_env = {**env, "NEWSLETTER_DATABASE_URL": url}
                    try:
                        ref_s, ref_mb, _ = run(
                            [sys.executable, "-c", READ_ONLY, str(path)], child_env, workdir
                        )
                        command = [
                            "subscribers",
                            "import",
                            str(path),
                            "--source",
                            "bench",
                            "--topic",
                            "newsletter",
                        ]
                        seconds, peak, output = run(
                            [sys.executable, "-c", "from newsletter.cli import cli; cli()", *command],
                            child_env,
                            workdir,
                        )
                    finally:
                        drop()
                    rates.append(rows / seconds)
                    peaks.append(peak)
                    ref_peaks.append(ref_mb)
                    counts = ", ".join(
                        line for line in output.splitlines() if line.startswith(("imported", "pending, conf"))
                    )
                    print(
                        f"    {kind:<10} {seconds:7.1f} s ({rates[-1]:,.0f} rows/s), peak RSS {peak:.0f} MB"
                        f" | reference (start, read the CSV) {ref_s:.1f} s, {ref_mb:.0f} MB | {counts}",
                        flush=True,
                    )
                summary.append((rows, kind, rates, peaks, ref_peaks))
    conn.flushdb()
    print(f"\nmin/median/max over {args.runs} run(s)")
    for rows, kind, rates, peaks, ref_peaks in summary:
        print(
            f"  {rows:>9,} {kind:<10} {spread(rates, ',.0f')} rows/s, peak RSS {spread(peaks, '.0f')} MB"
            f" | reference peak RSS {spread(ref_peaks, '.0f')} MB"
        )


if __name__ == "__main__":
    main()
