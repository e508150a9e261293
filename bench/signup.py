"""Signup POST throughput and latency, enqueue included, against gunicorn on this machine.

Runs gunicorn (2 workers x 4 threads) on PostgreSQL and Redis, then drives it with wrk
(Debian package ``wrk``) when present, else with a threaded Python client. Every POST is a
new address, so each request does the whole job: rate-limit check in Redis, validation,
subscriber + topics + ledger + outbox rows in one transaction, and the RQ enqueue.

    python bench/signup.py [--seconds 15] [--connections 16] [--sqlite]

Prints requests/s, p50 and p99 latency, next to the aim (300 req/s, p99 < 100 ms) and to
a GET of the same page measured in the same run (the HTTP stack's own ceiling here).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import redis
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.core.migrate import upgrade  # noqa: E402
from newsletter.models import OutboxEmail  # noqa: E402

PG_URL = os.environ.get("NEWSLETTER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NEWSLETTER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
AIM_RPS, AIM_P99_MS = 300, 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer at {url}")


def session_and_token(base: str) -> tuple[str, str]:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/subscribe").read().decode()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    return cookie, token


WRK_POST = textwrap.dedent(
    """
    local counter = 0
    local thread_id = 0
    local threads = {}
    function setup(thread)
      thread:set("tid", #threads)
      table.insert(threads, thread)
    end
    function init(args)
      wrk.method = "POST"
      wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
      wrk.headers["Cookie"] = "%(cookie)s"
    end
    function request()
      counter = counter + 1
      local body = "csrf_token=%(token)s&topics=newsletter&first_name=Bench&email=b"
        .. tid .. "x" .. counter .. "%%40example.com"
      return wrk.format(nil, "/subscribe", nil, body)
    end
    done = function(summary, latency, requests)
      io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99), summary.errors.status, summary.errors.timeout))
    end
    """
)
WRK_GET = textwrap.dedent(
    """
    done = function(summary, latency, requests)
      io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99), summary.errors.status, summary.errors.timeout))
    end
    """
)


def run_wrk(base: str, script: str, path: str, seconds: int, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", handle.name, base + path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(handle.name)
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    requests, duration_us, p50, p99, bad_status, timeouts = (int(v) for v in line.split()[1:])
    return {
        "requests": requests,
        "rps": requests / (duration_us / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "errors": bad_status + timeouts,
    }


def run_python_client(base: str, cookie: str, token: str, post: bool, seconds: int, connections: int) -> dict:
    import http.client
    import threading
    from urllib.parse import urlencode, urlsplit

    host, port = urlsplit(base).hostname, urlsplit(base).port
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        i = 0
        local = []
        while time.monotonic() < stop:
            i += 1
            started = time.perf_counter()
            if post:
                body = urlencode(
                    {"csrf_token": token, "topics": "newsletter", "email": f"p{n}x{i}@example.com"}
                )
                conn.request(
                    "POST",
                    "/subscribe",
                    body,
                    {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
                )
            else:
                conn.request("GET", "/subscribe")
            response = conn.getresponse()
            response.read()
            local.append(time.perf_counter() - started)
            if response.status != 200:
                errors[0] += 1
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--sqlite", action="store_true", help="use a SQLite file instead of PostgreSQL")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="nl-bench-"))
    schema = f"nl_bench_{uuid.uuid4().hex[:8]}"
    if args.sqlite:
        database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    else:
        admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        database_url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    upgrade(database_url)
    redis.Redis.from_url(REDIS_URL).flushdb()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "NEWSLETTER_INSTANCE_PATH": str(workdir),
        "NEWSLETTER_SECRET_KEY": "bench",
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_REDIS_URL": REDIS_URL,
        "NEWSLETTER_OUTBOX_DIR": str(workdir / "outbox"),
        # every request comes from 127.0.0.1: lift the per-IP limit so we measure the signup itself
        "NEWSLETTER_SIGNUP_RATE_LIMIT": "100000000/60",
    }
    gunicorn = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_for(f"{base}/subscribe")
        cookie, token = session_and_token(base)
        tool = "wrk" if shutil.which("wrk") else "python threads"
        if tool == "wrk":
            get = run_wrk(base, WRK_GET, "/subscribe", args.seconds, args.connections)
            post = run_wrk(
                base,
                WRK_POST % {"cookie": cookie, "token": token},
                "/subscribe",
                args.seconds,
                args.connections,
            )
        else:
            get = run_python_client(base, cookie, token, False, args.seconds, args.connections)
            post = run_python_client(base, cookie, token, True, args.seconds, args.connections)

        engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            outbox_rows = conn.scalar(select(func.count()).select_from(OutboxEmail))
        engine.dispose()
        queued = redis.Redis.from_url(REDIS_URL).llen("rq:queue:transactional")
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        gunicorn.wait(timeout=30)
        redis.Redis.from_url(REDIS_URL).flushdb()
        if not args.sqlite:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        shutil.rmtree(workdir, ignore_errors=True)

    db = "SQLite" if args.sqlite else "PostgreSQL"
    print(
        f"signup benchmark: gunicorn {args.workers} workers x {args.threads} threads, {db}, Redis, "
        f"load by {tool}, {args.connections} connections, {args.seconds}s each, {os.cpu_count()} cores"
    )
    print(
        f"  GET  /subscribe (reference): {get['rps']:8.0f} req/s  p50 {get['p50_ms']:6.1f} ms  "
        f"p99 {get['p99_ms']:6.1f} ms  errors {get['errors']}"
    )
    print(
        f"  POST /subscribe (signup)   : {post['rps']:8.0f} req/s  p50 {post['p50_ms']:6.1f} ms  "
        f"p99 {post['p99_ms']:6.1f} ms  errors {post['errors']}"
    )
    print(
        f"  aim: >= {AIM_RPS} req/s with p99 < {AIM_P99_MS} ms -> "
        f"{'met' if post['rps'] >= AIM_RPS and post['p99_ms'] < AIM_P99_MS else 'NOT met'}"
    )
    print(
        f"  check: {outbox_rows} outbox rows written, {queued} jobs waiting on the transactional queue "
        f"(completed POSTs: {post['requests']})"
    )


if __name__ == "__main__":
    main()
