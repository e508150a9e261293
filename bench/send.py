"""Campaign sending throughput: real workers, PostgreSQL, Redis, and Postfix's smtp-sink as relay.

    python bench/send.py [--subscribers 10000 100000] [--workers 2] [--capped 0.3] [--dkim rsa|ed25519]
                         [--runs 3] [--profile DIR [--wall]]

PostgreSQL and Redis: ``NEWSLETTER_BENCH_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
and ``NEWSLETTER_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/13``; the bench flushes that
database). Each run makes and drops its own schema in that database.

For each size: seeds N confirmed subscribers, 30% of whom got another campaign 10 hours ago
(so the store's 1-per-20h cap defers them), schedules an early-access sale built from
campaigns/spring-sale (one wave, everyone, public in two days), and runs K
``newsletter worker`` processes until every row is sent or deferred. Prints emails/s from
the wave's start (the first enqueue) to the last 250 reply, CPU seconds of the workers per
1,000 emails, peak RSS per worker process (work horses included), and the ratio to the
reference measured in the same run: Postfix's ``smtp-source`` pushing the same number of
same-size messages over as many SMTP sessions as the workers open (K x SEND_CONNECTIONS)
into the same smtp-sink (the relay's and loopback's limit with no engine at all), and CPU ms
per email by part: the workers, the whole PostgreSQL server, Redis, smtp-sink and the machine,
beside the reference's smtp-source and smtp-sink. Quiet hours are off (they depend on the hour
the bench runs).

``--runs N`` repeats every measurement N times and prints min/median/max of the rates and ratios.
``--profile DIR [--wall]`` samples every worker and its work horses with py-spy (``pip install
py-spy``; samples holding the GIL, with ``--wall`` every thread's, waiting included) into
DIR/*.txt (collapsed stacks) and prints the frames most often on the workers' stacks.

``--dkim rsa`` runs each size twice, unsigned and DKIM-signed (RSA-2048; ``ed25519``: RSA and
Ed25519 side by side), each next to its own reference, and prints the signing cost per
message (worker CPU) and a micro-benchmark of signing one such message alone: the engine's
signer (``cryptography``) against dkimpy's.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import redis
from sqlalchemy import create_engine, func, insert, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.runs import machine_cpu, proc_cpu, server_cpu  # noqa: E402
from newsletter.core import clock  # noqa: E402
from newsletter.core.migrate import upgrade  # noqa: E402
from newsletter.mail.skeleton import build_skeleton, personalise  # noqa: E402
from newsletter.models import (  # noqa: E402
    Campaign,
    Delivery,
    DeliveryState,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Topic,
    Wave,
)
from newsletter.models.subscribers import address_hash  # noqa: E402

PG_URL = os.environ.get("NEWSLETTER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NEWSLETTER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
EXAMPLE = ROOT / "campaigns" / "spring-sale"
SLUG = "bench-sale"
PROFILE_WALL = False  #: --wall: profile every thread, not only the one holding the GIL
PRODUCTS = 3  #: product blocks added to the example's email: ~30 KB on the wire


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


def campaign_folder(tmp: Path, now) -> Path:
    """The example sale's email, one wave for everyone now, public in two days."""
    folder = tmp / SLUG
    shutil.copytree(EXAMPLE, folder)
    # A catalogue of products under the example's text: an email of ~30 KB, as stores send.
    email = (folder / "email.mjml").read_text("utf-8")
    products = """{% for n in range(1, PRODUCTS + 1) %}
<mj-section background-color="#ffffff" padding="8px 24px">
  <mj-column width="40%">
    <mj-image src="https://shop.example/static/p{{ n }}.jpg" alt="Product {{ n }}" />
  </mj-column>
  <mj-column width="60%">
    <mj-text font-size="16px" font-weight="bold">Spring product number {{ n }}</mj-text>
    <mj-text>Hand-made, sustainably sourced, and now {{ 10 + n % 30 }}% off for you.</mj-text>
    <mj-button href="https://shop.example/products/{{ n }}">See product {{ n }}</mj-button>
  </mj-column>
</mj-section>
{% endfor %}
""".replace("PRODUCTS", str(PRODUCTS))
    (folder / "email.mjml").write_text(email.replace("{% endblock %}", products + "{% endblock %}"), "utf-8")
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    (folder / "campaign.toml").write_text(
        "\n".join(
            [
                'name = "Bench sale"',
                'subject = "Early access, {{ subscriber.first_name }}"',
                'preheader = "Before everyone else"',
                'topic = "early-access"',
                "[sale]",
                'url = "https://shop.example/spring"',
                f"public_at = {(now + timedelta(days=2)).strftime(stamp)}",
                f"ends_at = {(now + timedelta(days=5)).strftime(stamp)}",
                "[[wave]]",
                'name = "everyone"',
                'audience = "all"',
                f"send_at = {now.strftime(stamp)}",
            ]
        )
        + "\n",
        "utf-8",
    )
    return folder


def seed(url: str, count: int, capped: float) -> None:
    """N confirmed subscribers of early-access; a share of them mailed 10 hours ago."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    now = clock.now()
    with engine.begin() as conn:
        topic_id = conn.scalar(select(Topic.id).where(Topic.slug == "early-access"))
        earlier = conn.execute(
            insert(Campaign).returning(Campaign.id),
            [
                {
                    "slug": "earlier",
                    "name": "Earlier",
                    "topic_slug": "early-access",
                    "status": "done",
                    "content_hash": "0" * 64,
                    "compiled": {},
                    "scheduled_at": now,
                    "error_streak": 0,
                }
            ],
        ).scalar_one()
        wave_id = conn.execute(
            insert(Wave).returning(Wave.id),
            [
                {
                    "campaign_id": earlier,
                    "position": 0,
                    "name": "all",
                    "audience": "all",
                    "send_at": now - timedelta(hours=10),
                    "status": "done",
                }
            ],
        ).scalar_one()
        for start in range(0, count, 5000):
            people = [
                {
                    "email": f"reader{i}@bench.example",
                    "email_hash": address_hash(f"reader{i}@bench.example"),
                    "first_name": f"Reader {i}",
                    "status": SubscriberStatus.ACTIVE.value,
                    "created_at": now,
                    "confirmed_at": now,
                    "frequency": "any",
                    "time_zone": "UTC",
                }
                for i in range(start, min(count, start + 5000))
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
            mailed = [i for n, i in enumerate(ids) if (start + n) % 100 < capped * 100]
            if mailed:
                conn.execute(
                    insert(Delivery),
                    [
                        {
                            "campaign_id": earlier,
                            "wave_id": wave_id,
                            "subscriber_id": i,
                            "state": "sent",
                            "sent_at": now - timedelta(hours=10),
                            "attempts": 1,
                            "updated_at": now,
                        }
                        for i in mailed
                    ],
                )
    engine.dispose()


def sample_message(url: str) -> bytes:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        compiled = conn.scalar(select(Campaign.compiled).where(Campaign.slug == SLUG))
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
    link = "https://store.example/x/" + "x" * 100
    values = {
        "first_name": "Reader 1",
        "email": "reader1@bench.example",
        "unsubscribe_url": link,
        "preferences_url": link,
        "early_access_url": link,
    }
    return personalise(skeleton, "reader1@bench.example", values, message_id="<bench@store.example>")


def write_keys(instance: Path, dkim: str) -> None:
    """Keys for selector ``bench`` in the instance folder (RSA; with ``ed25519`` an Ed25519 key beside it)."""
    from newsletter.mail.dkim import generate_key

    folder = instance / "dkim"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.pem").write_bytes(generate_key("rsa"))
    if dkim == "ed25519":
        (folder / "bench-ed25519.pem").write_bytes(generate_key("ed25519"))


def sign_alone(instance: Path, message: bytes, rounds: int = 300) -> dict:
    """ms to sign one message: the engine's signer, and dkimpy's sign() with the same RSA key."""
    from newsletter.mail import dkim

    key_file = instance / "dkim" / "bench.pem"
    keys = [dkim.load_key(key_file, "bench")]
    if dkim.ed25519_path(key_file).exists():
        keys.append(dkim.load_key(dkim.ed25519_path(key_file), "bench-ed25519"))
    ours = dkim.Signer("store.example", keys)

    def timed(sign, n: int) -> float:
        sign()
        began = time.perf_counter()
        for _ in range(n):
            sign()
        return (time.perf_counter() - began) / n * 1000

    result = {"ours": timed(lambda: ours.sign(message), rounds)}
    try:
        import dkim as dkimpy  # a dev dependency: the tests' verifier
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        return result
    # dkimpy wants the traditional (PKCS#1) PEM and parses it on every call
    pem = keys[0].private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    headers = [
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
    ]
    result["dkimpy"] = timed(
        lambda: dkimpy.sign(
            message,
            b"bench",
            b"store.example",
            pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=headers,
        ),
        max(20, rounds // 10),
    )
    return result


def smtp_source_rate(
    source: str, count: int, sessions: int, message_bytes: int, target: str, prefix: tuple[str, ...] = ()
) -> float:
    """The reference: emails/s of Postfix's smtp-source pushing COUNT messages of MESSAGE_BYTES over
    SESSIONS sessions to TARGET (host:port); PREFIX runs it elsewhere (``ip netns exec HOST``)."""
    began = time.monotonic()
    subprocess.run(
        [
            *prefix,
            source,
            "-s",
            str(sessions),
            "-m",
            str(count),
            "-l",
            str(message_bytes),
            "-d",
            "-f",
            "news@store.example",
            "-t",
            "reader@bench.example",
            target,
        ],
        check=True,
    )
    return count / (time.monotonic() - began)


def run(cmd: list[str], env: dict) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")


def peak_rss_mb(pids: list[int]) -> float:
    """The largest VmHWM among the workers and their current children (the work horses)."""
    peak = 0
    for pid in pids:
        family = [pid]
        try:
            family += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            pass
        for member in family:
            try:
                for line in Path(f"/proc/{member}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
    return peak / 1024


def start_profilers(folder: Path, label: str, pids: list[int], wall: bool = False) -> list[subprocess.Popen]:
    """py-spy on every worker and its work horses, collapsed stacks: GIL-holding samples, or every
    thread's (``wall``: where the time goes, waiting included)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--subprocesses",
                "--idle" if wall else "--gil",
                "--nolineno",
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(folder / f"{label}-worker{n}.txt"),
                "--pid",
                str(pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n, pid in enumerate(pids)
    ]


def profile_summary(files: list[Path], top: int = 30) -> list[tuple[float, str]]:
    """(share of all samples, frame) for the frames most often on the stack, each counted once per stack."""
    inclusive: dict[str, int] = {}
    total = 0
    for file in files:
        for line in file.read_text("utf-8", "replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            for frame in set(stack.split(";")):
                inclusive[frame] = inclusive.get(frame, 0) + int(count)
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return [(n / max(total, 1), frame) for frame, n in ranked]


def bench(size: int, workers_count: int, capped: float, dkim: str = "", profile: Path | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="nl-bench-send-"))
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
        seed(url, size, capped)
        env = {  # the engine ignores the bench's own NEWSLETTER_BENCH_* (core/config.py)
            **os.environ,
            "NEWSLETTER_INSTANCE_PATH": str(tmp),
            "NEWSLETTER_SECRET_KEY": "bench-secret",
            "NEWSLETTER_DATABASE_URL": url,
            "NEWSLETTER_REDIS_URL": REDIS_URL,
            "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{port}",
            "NEWSLETTER_MARKETING_CAPS": "1/20h, 3/7d, 8/30d",
            "NEWSLETTER_QUIET_HOURS": "",
            "NEWSLETTER_TICK_INTERVAL": "1",
            "NEWSLETTER_BASE_URL": "https://store.example",
        }
        if dkim:
            write_keys(tmp, dkim)
            env["NEWSLETTER_DKIM_SELECTOR"] = "bench"
        newsletter = str(Path(sys.executable).parent / "newsletter")
        run(
            [
                newsletter,
                "campaign",
                "schedule",
                str(campaign_folder(tmp, clock.now() + timedelta(minutes=1))),
            ],
            env,
        )
        run([newsletter, "campaign", "send", SLUG, "--now"], env)
        message = sample_message(url)
        message_bytes = len(message)
        alone = sign_alone(tmp, message) if dkim else {}

        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        redis_pid = int(redis.Redis.from_url(REDIS_URL).info("server")["process_id"])
        others = {"Redis": [redis_pid], "smtp-sink": [sink.pid]}
        parts_before, server_before = _cpu_of(others), server_cpu(engine)
        machine_before = machine_cpu()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        workers = [
            subprocess.Popen([newsletter, "worker"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
            for _ in range(workers_count)
        ]
        label = f"{size}{'-' + dkim if dkim else ''}-{uuid.uuid4().hex[:4]}"
        spies = start_profilers(profile, label, [w.pid for w in workers], PROFILE_WALL) if profile else []
        rss = 0.0
        # polled by one index probe, not a count of the ledger: counting a million rows twice a
        # second would take PostgreSQL's CPU from the engine being measured
        campaign = select(Campaign.id).where(Campaign.slug == SLUG).scalar_subquery()
        wave_started = select(Wave.id).where(Wave.campaign_id == campaign, Wave.started_at.is_not(None))
        unfinished = (
            select(Delivery.id)
            .where(
                Delivery.campaign_id == campaign,
                Delivery.state.in_([DeliveryState.QUEUED, DeliveryState.CLAIMED, DeliveryState.SENDING]),
            )
            .exists()
        )
        while True:
            time.sleep(0.5)
            rss = max(rss, peak_rss_mb([w.pid for w in workers]))
            with engine.connect() as conn:
                done = conn.scalar(select(wave_started.exists() & ~unfinished))
            if done:
                break
            if time.monotonic() - started > max(1800, size / 100):  # 30 minutes, more for a million
                raise SystemExit(f"not done after {time.monotonic() - started:.0f} s")
        with engine.connect() as conn:
            states = ledger_states(conn, campaign)
            first_start = conn.scalar(select(Wave.started_at).join(Campaign).where(Campaign.slug == SLUG))
            last = conn.scalar(select(func.max(Delivery.sent_at)).join(Campaign).where(Campaign.slug == SLUG))
        # the workers' own CPU comes from RUSAGE_CHILDREN once they have exited; the rest now
        parts = {**_cpu_of(others, parts_before), "PostgreSQL": server_cpu(engine) - server_before}
        busy, window = machine_cpu() - machine_before, time.monotonic() - started
        engine.dispose()
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a job still finishing: its CPU is counted anyway
                worker.kill()
                worker.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        for spy in spies:  # each stops when its worker has exited
            spy.wait(timeout=60)
        sent = states.get(DeliveryState.SENT, 0)
        span = max((last - first_start).total_seconds(), 1e-3)

        source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
        # the same number of SMTP sessions as the engine: each worker sends SEND_CONNECTIONS at once
        sessions = workers_count * int(env.get("NEWSLETTER_SEND_CONNECTIONS", "4"))
        sink_before, source_before = proc_cpu(sink.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        reference = smtp_source_rate(source, sent, sessions, message_bytes, f"127.0.0.1:{port}")
        source_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        reference_parts = {
            "smtp-source": (source_after.ru_utime - source_before.ru_utime)
            + (source_after.ru_stime - source_before.ru_stime),
            "smtp-sink": proc_cpu(sink.pid) - sink_before,
        }
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        sink.terminate()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "subscribers": size,
        "sent": sent,
        "deferred": states.get(DeliveryState.DEFERRED, 0),
        "bytes": message_bytes,
        "rate": sent / span,
        "cpu_per_1000": cpu / max(sent, 1) * 1000,
        # CPU ms per email sent, by process: the engine's send, then the reference's
        "ms_per_email": {"workers": cpu, **parts, "machine": busy, "window": window},
        "reference_ms": reference_parts,
        "rss_mb": rss,
        "reference": reference,
        "sessions": sessions,
        "dkim": dkim,
        "sign_alone": alone,
        "profile": sorted(profile.glob(f"{label}-worker*.txt")) if profile else [],
    }


def ledger_states(conn, campaign) -> dict:
    """How many of the campaign's delivery rows are in each state."""
    query = select(Delivery.state, func.count()).where(Delivery.campaign_id == campaign)
    return dict(conn.execute(query.group_by(Delivery.state)).all())


def _cpu_of(pids: dict[str, list[int]], since: dict[str, dict[int, float]] | None = None):
    """CPU seconds per part so far (``since``: the CPU each part's processes had used by then)."""
    now = {part: {pid: proc_cpu(pid) for pid in members} for part, members in pids.items()}
    if since is None:
        return now
    return {
        part: sum(used - since.get(part, {}).get(pid, 0.0) for pid, used in members.items())
        for part, members in now.items()
    }


def cpu_split(r: dict) -> str:
    """Where the CPU went, in ms per email: the engine's parts, the machine, and the reference's."""
    sent = max(r["sent"], 1)
    engine = r["ms_per_email"]
    parts = ", ".join(
        f"{part} {engine[part] / sent * 1000:.2f}" for part in ("workers", "PostgreSQL", "Redis", "smtp-sink")
    )
    cores = engine["machine"] / max(engine["window"], 1e-3)  # workers' start to the last row
    reference = ", ".join(f"{part} {used / sent * 1000:.2f}" for part, used in r["reference_ms"].items())
    return (
        f"    CPU ms per email: {parts}; machine {engine['machine'] / sent * 1000:.2f} "
        f"({cores:.2f} of {os.cpu_count()} cores busy); reference: {reference}"
    )


def describe(r: dict) -> str:
    label = f" DKIM-signed ({'RSA + Ed25519' if r['dkim'] == 'ed25519' else 'RSA-2048'})" if r["dkim"] else ""
    return (
        f"{r['subscribers']:>7} subscribers{label}: {r['sent']} sent, "
        f"{r['deferred']} deferred by the cap, "
        f"{r['bytes']} bytes each\n"
        f"    engine    {r['rate']:7.0f} emails/s (wave start to last 250), "
        f"{r['cpu_per_1000']:.2f} CPU s per 1000, peak RSS {r['rss_mb']:.0f} MB per worker process\n"
        f"    reference {r['reference']:7.0f} emails/s smtp-source, same size, same sink, "
        f"{r['sessions']} sessions: "
        f"ratio {r['rate'] / r['reference']:.2f}\n" + cpu_split(r)
    )


def spread(values: list[float], fmt: str) -> str:
    """min / median / max."""
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--capped", type=float, default=0.3, help="share mailed 10 hours ago")
    parser.add_argument(
        "--dkim",
        choices=["rsa", "ed25519"],
        help="also run signed (rsa: RSA-2048; ed25519: RSA and Ed25519 side by side) and compare",
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat each measurement; min/median/max")
    parser.add_argument("--profile", type=Path, help="py-spy every worker into this folder")
    parser.add_argument("--wall", action="store_true", help="with --profile: every thread, waiting included")
    args = parser.parse_args()
    global PROFILE_WALL
    PROFILE_WALL = args.wall
    print(f"{args.workers} workers, PostgreSQL, Redis, smtp-sink; aim: >= 50% of the same-run reference")
    for size in args.subscribers:
        variants: list[list[dict]] = [[], []] if args.dkim else [[]]
        for _ in range(args.runs):
            for runs, dkim in zip(variants, ["", args.dkim or ""], strict=False):
                runs.append(bench(size, args.workers, args.capped, dkim, args.profile))
                print(describe(runs[-1]), flush=True)
        for runs in variants:
            if len(runs) > 1:
                print(
                    f"  {size} subscribers{' DKIM-signed' if runs[0]['dkim'] else ''}, {len(runs)} runs "
                    f"(min / median / max): engine {spread([r['rate'] for r in runs], '.0f')} emails/s, "
                    f"reference {spread([r['reference'] for r in runs], '.0f')}, "
                    f"ratio {spread([r['rate'] / r['reference'] for r in runs], '.2f')}, "
                    f"CPU s per 1000 {spread([r['cpu_per_1000'] for r in runs], '.2f')}, "
                    f"peak RSS {max(r['rss_mb'] for r in runs):.0f} MB",
                    flush=True,
                )
            if args.profile:
                print(f"  profile ({len(runs)} runs, share of GIL-holding samples, inclusive):")
                for share, frame in profile_summary([f for r in runs for f in r["profile"]]):
                    print(f"    {share:6.1%}  {frame}")
        if args.dkim:
            plain, signed = variants[0][-1], variants[1][-1]
            alone = signed["sign_alone"]
            print(
                f"    signing: +{signed['cpu_per_1000'] - plain['cpu_per_1000']:.2f} ms worker CPU "
                f"per message; {plain['rate']:.0f} -> {signed['rate']:.0f} emails/s; one "
                f"{signed['bytes']}-byte message signed alone: {alone['ours']:.2f} ms (cryptography)"
                + (f", {alone['dkimpy']:.2f} ms (dkimpy)" if "dkimpy" in alone else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
