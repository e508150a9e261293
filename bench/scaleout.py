"""Scale-out on real parts: workers on two hosts; PostgreSQL, Redis and the relay on a third.

    sudo .venv/bin/python bench/scaleout.py [--subscribers 20000] [--workers 1 2 4] [--runs 3]

The "hosts" are Linux network namespaces on this machine, made by the bench and removed after
it (also on an error, Ctrl-C or SIGTERM; a leftover of a killed run is removed at the next
start): ``nl-db`` holds a bridge (10.77.0.1), a private PostgreSQL cluster (initdb into a
temporary folder, run as the ``postgres`` user, trust for 10.77.0.0/24 only), a private
redis-server and Postfix's ``smtp-sink`` as the relay; ``nl-w1`` (10.77.0.11) and ``nl-w2``
(10.77.0.12) hold the workers, each joined to the bridge by a veth pair; the bench itself
reaches the bridge through a third pair (``nl-ctl``, 10.77.0.254). Every packet between a
worker and PostgreSQL, Redis or the relay crosses a veth pair and the bridge.

For each worker count (1, 2, 4 ``newsletter worker`` processes, spread over the two worker
hosts) and each run: a fresh database (``newsletter db upgrade``), N confirmed subscribers
(``bench/send.py``'s seed, nobody capped), the campaign of ``bench/send.py`` scheduled and
sent now, then the workers until every delivery row is sent. Prints emails/s from the wave's
start to the last 250 reply, the same-run reference (``smtp-source`` from ``nl-w1`` into the
same sink over the veth: as many messages of the same size over as many SMTP sessions as the
workers hold, ``SEND_CONNECTIONS`` each), the CPU each part used (cores busy over the run) and
checks the guarantees: one delivery row per subscriber, every row sent, and at the sink (its
``-D`` dump on tmpfs) every subscriber's address received exactly once, nothing else.
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import glob
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import redis
from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import send  # noqa: E402  (bench/send.py: the campaign, the subscribers, the sample message)

from newsletter.core import clock  # noqa: E402
from newsletter.models import Campaign, Delivery, DeliveryState, Wave  # noqa: E402

ROOT = send.ROOT
DB_HOST, WORKER_HOSTS = "nl-db", ("nl-w1", "nl-w2")
BRIDGE, CTL_LINK = "nl-br0", "nl-ctl"
DB_IP, CTL_IP = "10.77.0.1", "10.77.0.254"
WORKER_IPS = {"nl-w1": "10.77.0.11", "nl-w2": "10.77.0.12"}
PG_PORT, REDIS_PORT, SMTP_PORT = 5432, 6390, 2525  # in nl-db's own network stack
SEND_CONNECTIONS = 4  #: SMTP sessions per sending job (the engine's default), set explicitly
PREFIX = "nl-scaleout-"  #: temporary folders (in /tmp and /dev/shm), removed at the end and at start
LOCK = Path("/run/lock/nl-scaleout.lock")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command (ip, initdb); its output is kept for the error message."""
    result = subprocess.run(args, capture_output=True, text=True)
    if check and result.returncode:
        raise SystemExit(f"{' '.join(args)} failed: {(result.stderr or result.stdout).strip()}")
    return result


def tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/local/bin/{name}") if Path(p).exists()), None
    )
    if not found:
        raise SystemExit(f"{name} not found (PostgreSQL, redis-server and postfix's smtp-sink/smtp-source)")
    return found


class Lab:
    """The namespaces, the services in nl-db and every process the bench started; ``close`` removes all."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.tmp: list[Path] = []
        self.closed = False

    # -- network ---------------------------------------------------------------------------
    def build_network(self) -> None:
        for ns in (DB_HOST, *WORKER_HOSTS):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", DB_HOST, "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "-n", DB_HOST, "addr", "add", f"{DB_IP}/24", "dev", BRIDGE)
        sh("ip", "-n", DB_HOST, "link", "set", BRIDGE, "up")
        for ns in WORKER_HOSTS:  # one veth pair per worker host: eth0 there, a bridge port in nl-db
            port = ns.removeprefix("nl-")
            sh(
                "ip",
                "link",
                "add",
                port,
                "netns",
                DB_HOST,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            sh("ip", "-n", DB_HOST, "link", "set", port, "master", BRIDGE, "up")
            sh("ip", "-n", ns, "addr", "add", f"{WORKER_IPS[ns]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        # the bench's own way in (seeding, polling): nl-ctl here, its peer a bridge port in nl-db
        sh("ip", "link", "add", CTL_LINK, "type", "veth", "peer", "name", "ctl", "netns", DB_HOST)
        sh("ip", "-n", DB_HOST, "link", "set", "ctl", "master", BRIDGE, "up")
        sh("ip", "addr", "add", f"{CTL_IP}/24", "dev", CTL_LINK)
        sh("ip", "link", "set", CTL_LINK, "up")

    def start(self, ns: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        """A process inside namespace ``ns`` (``ip netns exec`` execs it: the pid is the process's)."""
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def mkdtemp(self, base: str | None = None) -> Path:
        path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
        self.tmp.append(path)
        return path

    # -- services in nl-db -----------------------------------------------------------------
    def start_postgres(self) -> str:
        """A private cluster on the db host's bridge address; returns the admin URL."""
        data = self.mkdtemp() / "pg"
        data.parent.chmod(0o755)
        data.mkdir()
        shutil.chown(data, "postgres", "postgres")
        sh(
            "runuser",
            "-u",
            "postgres",
            "--",
            tool("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all postgres {DB_IP.rsplit('.', 1)[0]}.0/24 trust\n")
        proc = self.start(
            DB_HOST,
            [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                tool("postgres"),
                "-D",
                str(data),
                "-c",
                f"listen_addresses={DB_IP}",
                "-c",
                f"port={PG_PORT}",
                "-c",
                f"unix_socket_directories={data}",
                "-c",
                "max_connections=100",
            ],
        )
        url = f"postgresql://postgres@{DB_IP}:{PG_PORT}/postgres"
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            wait_for(lambda: _connects(engine), proc, "PostgreSQL")
        finally:
            engine.dispose()
        return url

    def start_redis(self) -> str:
        proc = self.start(
            DB_HOST,
            [
                tool("redis-server"),
                "--bind",
                DB_IP,
                "--port",
                str(REDIS_PORT),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp[0]),
                "--protected-mode",
                "no",
            ],
        )
        url = f"redis://{DB_IP}:{REDIS_PORT}/0"
        client = redis.Redis.from_url(url)
        wait_for(lambda: _pings(client), proc, "redis-server")
        return url

    def start_sink(self, dump: Path) -> subprocess.Popen:
        """smtp-sink as the relay, every transaction appended to ``dump`` (tmpfs: no disk in the way)."""
        proc = self.start(
            DB_HOST, [tool("smtp-sink"), "-u", "nobody", "-D", str(dump), f"{DB_IP}:{SMTP_PORT}", "1024"]
        )
        wait_for(lambda: _accepts(DB_IP, SMTP_PORT), proc, "smtp-sink")
        return proc

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """Kill everything at once: the cluster, the queues and the mail here are all throwaway."""
        if self.closed:
            return
        self.closed = True
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C must not stop this
            signal.signal(signum, signal.SIG_IGN)
        for proc in self.procs:
            kill(proc)
        remove_leftovers()
        for path in self.tmp:
            shutil.rmtree(path, ignore_errors=True)


def remove_leftovers() -> None:
    """Kill what runs in our namespaces, delete them (so every veth and the bridge), remove our folders."""
    for ns in (DB_HOST, *WORKER_HOSTS):
        if not Path(f"/run/netns/{ns}").exists():
            continue
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the kernel to reap them, not for a result
        sh("ip", "netns", "del", ns, check=False)
    if Path(f"/sys/class/net/{CTL_LINK}").exists():  # normally gone with its peer in nl-db
        sh("ip", "link", "del", CTL_LINK, check=False)
    for base in (tempfile.gettempdir(), "/dev/shm"):
        for path in glob.glob(os.path.join(base, PREFIX + "*")):
            shutil.rmtree(path, ignore_errors=True)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process group (a worker and its work horse), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL to the process group (a worker and its work horse), reaped."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def wait_for(ready, proc: subprocess.Popen, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode} at start")
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not answer within {timeout:.0f} s")
        time.sleep(0.05)


def _connects(engine) -> bool:
    try:
        with engine.connect():
            return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


# -- measuring ---------------------------------------------------------------------------------
def ns_cpu(ns: str) -> Counter:
    """CPU seconds by program of everything in ``ns``, exited children included (cutime)."""
    tick = os.sysconf("SC_CLK_TCK")
    total: Counter = Counter()
    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        utime, stime, cutime, cstime = (int(x) for x in stat[stat.rindex(")") + 2 :].split()[11:15])
        total[name] += (utime + stime + cutime + cstime) / tick
    return total


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far: the load of everything else shows here too."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Snapshot:
    """CPU seconds so far by host and program (``db:postgres``, ``nl-w1:newsletter``), the machine's, when."""

    at: float
    cpu: Counter
    busy: float

    @classmethod
    def take(cls) -> Snapshot:
        cpu: Counter = Counter()
        for ns in (DB_HOST, *WORKER_HOSTS):
            host = "db" if ns == DB_HOST else ns
            cpu.update({f"{host}:{name}": s for name, s in ns_cpu(ns).items()})
        return cls(time.monotonic(), cpu, machine_busy())


def sink_recipients(dump: Path, offset: int = 0) -> tuple[Counter, Counter, int]:
    """Recipients and client addresses of the transactions in the dump from ``offset``; its end."""
    rcpts: Counter = Counter()
    clients: Counter = Counter()
    with dump.open("rb") as f:
        f.seek(offset)
        for line in f:
            if line.startswith(b"X-Rcpt-Args: "):
                rcpts[line[13:].split()[0].strip(b"<>").decode()] += 1
            elif line.startswith(b"X-Client-Addr: "):
                clients[line[15:].strip().decode()] += 1
        end = f.tell()
    return rcpts, clients, end


def worker_env(url: str, redis_url: str, instance: Path) -> dict:
    """Only real NEWSLETTER_* settings (the engine refuses unknown ones) and what a process needs."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ") if k in os.environ}
    instance.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "NEWSLETTER_INSTANCE_PATH": str(instance),
            "NEWSLETTER_SECRET_KEY": "bench-secret",
            "NEWSLETTER_DATABASE_URL": url,
            "NEWSLETTER_REDIS_URL": redis_url,
            "NEWSLETTER_SMTP_URL": f"smtp://{DB_IP}:{SMTP_PORT}",
            "NEWSLETTER_SEND_CONNECTIONS": str(SEND_CONNECTIONS),
            "NEWSLETTER_MARKETING_CAPS": "1/20h, 3/7d, 8/30d",
            "NEWSLETTER_QUIET_HOURS": "",
            "NEWSLETTER_TICK_INTERVAL": "1",
            "NEWSLETTER_BASE_URL": "https://store.example",
        }
    )
    return env


def one_run(lab: Lab, admin_url: str, redis_url: str, size: int, count: int, label: str) -> dict:
    """One campaign sent by ``count`` workers over the two hosts, then the reference; checked."""
    name = f"run_{label}"
    admin = create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    redis.Redis.from_url(redis_url).flushall()
    work = lab.mkdtemp()
    dump = lab.mkdtemp("/dev/shm") / "sink.dump"
    dump.parent.chmod(0o777)  # the sink writes as nobody
    sink = lab.start_sink(dump)
    newsletter = str(Path(sys.executable).parent / "newsletter")
    ctl_env = worker_env(url, redis_url, work / "ctl")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    workers: list[subprocess.Popen] = []
    try:
        send.run([newsletter, "db", "upgrade"], ctl_env)
        send.seed(url, size, 0.0)
        folder = send.campaign_folder(work, clock.now() + timedelta(minutes=1))
        send.run([newsletter, "campaign", "schedule", str(folder)], ctl_env)
        send.run([newsletter, "campaign", "send", send.SLUG, "--now"], ctl_env)
        message_bytes = len(send.sample_message(url))

        hosts = [WORKER_HOSTS[i % len(WORKER_HOSTS)] for i in range(count)]
        began, before = time.monotonic(), os.times()
        workers = [
            lab.start(host, [newsletter, "worker"], env=worker_env(url, redis_url, work / host), cwd=ROOT)
            for host in hosts
        ]
        rss = connections = 0
        waits: Counter = Counter()  #: what PostgreSQL's backends were doing at each poll
        start: Snapshot | None = None
        campaign = select(Campaign.id).where(Campaign.slug == send.SLUG).scalar_subquery()
        while True:  # the condition: every delivery row of the campaign sent
            with engine.connect() as conn:
                states = send.ledger_states(conn, campaign)
                backends = conn.execute(
                    text(
                        "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).all()
            connections = max(connections, len(backends))
            for state, kind, event in backends:
                waits[f"{state}: {kind}:{event}" if kind and state == "active" else state] += 1
            rss = max(rss, send.peak_rss_mb([w.pid for w in workers]))
            if start is None and states:  # the wave started: its rows are in the ledger
                start = Snapshot.take()
            if states.get(DeliveryState.SENT, 0) == size:
                end = Snapshot.take()
                break
            if any(
                states.get(s) for s in (DeliveryState.FAILED, DeliveryState.DEFERRED, DeliveryState.SKIPPED)
            ):
                raise SystemExit(f"rows neither sent nor pending: {states}")
            if any(w.poll() is not None for w in workers):
                raise SystemExit(f"a worker exited with {[w.returncode for w in workers]}: {states}")
            if time.monotonic() - began > 1800:
                raise SystemExit(f"not done after 30 minutes: {states}")
            time.sleep(0.2)  # the poll's interval
        for worker in workers:
            stop(worker, timeout=60)
        after = os.times()

        with engine.connect() as conn:
            first = conn.scalar(select(Wave.started_at).join(Campaign).where(Campaign.slug == send.SLUG))
            last = conn.scalar(select(func.max(Delivery.sent_at)).where(Delivery.campaign_id == campaign))
            rows, people = conn.execute(
                select(func.count(), func.count(Delivery.subscriber_id.distinct())).where(
                    Delivery.campaign_id == campaign
                )
            ).one()
        rcpts, clients, offset = sink_recipients(dump)
        expected = {f"reader{i}@bench.example" for i in range(size)}
        problems = []
        if rows != size or people != size:
            problems.append(f"{rows} delivery rows for {people} subscribers, expected {size}")
        if set(rcpts) != expected:
            problems.append(
                f"{len(expected - set(rcpts))} subscribers never reached the sink, "
                f"{len(set(rcpts) - expected)} unknown addresses did"
            )
        twice = sum(1 for n in rcpts.values() if n > 1)
        if twice:
            problems.append(f"{twice} subscribers received the campaign more than once")
        if problems:
            raise SystemExit(f"guarantees broken ({count} workers): " + "; ".join(problems))

        sessions = count * SEND_CONNECTIONS
        reference = send.smtp_source_rate(
            tool("smtp-source"),
            size,
            sessions,
            message_bytes,
            f"{DB_IP}:{SMTP_PORT}",
            prefix=("ip", "netns", "exec", WORKER_HOSTS[0]),
        )
        ref_rcpts, _, _ = sink_recipients(dump, offset)
        if sum(ref_rcpts.values()) != size:
            raise SystemExit(f"the sink counted {sum(ref_rcpts.values())} of smtp-source's {size} messages")
    finally:  # after an error: nothing of this run is worth waiting for
        for worker in workers:
            kill(worker)
        kill(sink)
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
        shutil.rmtree(dump.parent, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    wall = max(end.at - start.at, 1e-3)
    cpu = end.cpu - start.cpu
    worker_cpu = sum(v for k, v in cpu.items() if not k.startswith("db:"))
    # the workers' whole lives (start-up, idle ticks, shutdown): a check on the window's figure
    life_cpu = sum(after[i] - before[i] for i in (2, 3))
    return {
        "workers": count,
        "hosts": Counter(hosts),
        "sent": size,
        "bytes": message_bytes,
        "rate": size / max((last - first).total_seconds(), 1e-3),
        "reference": reference,
        "sessions": sessions,
        "clients": {addr: n for addr, n in sorted(clients.items())},
        "cores": {
            "workers": worker_cpu / wall,
            "postgres": cpu["db:postgres"] / wall,
            "redis": cpu["db:redis-server"] / wall,
            "sink": cpu["db:smtp-sink"] / wall,
            "machine": (end.busy - start.busy) / wall,
        },
        "cpu_ms": worker_cpu / size * 1000,
        "life_cpu_ms": life_cpu / size * 1000,
        "waits": waits,
        "rss_mb": rss,
        "connections": connections,
    }


def spread(values: list[float]) -> str:
    return f"{min(values):6.0f} {statistics.median(values):6.0f} {max(values):6.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--subscribers", type=int, default=20000, help="20 batch jobs: an even share for 1, 2 and 4 workers"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=3, help="runs per worker count (min/median/max)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/scaleout.py makes network namespaces: run it as root (sudo)")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    lock = LOCK.open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another bench/scaleout.py is running (it holds {LOCK})") from None

    remove_leftovers()  # of a run that was killed before it could clean up
    lab = Lab()
    atexit.register(lab.close)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # unwind through finally like Ctrl-C does
        signal.signal(signum, lambda n, _frame: sys.exit(128 + n))
    try:
        lab.build_network()
        admin_url = lab.start_postgres()
        redis_url = lab.start_redis()
        print(
            f"hosts: {DB_HOST} {DB_IP} (PostgreSQL, Redis, smtp-sink), "
            + ", ".join(f"{h} {WORKER_IPS[h]}" for h in WORKER_HOSTS)
            + f" (workers); {args.subscribers} subscribers, {SEND_CONNECTIONS} SMTP sessions per worker, "
            f"{os.cpu_count()} CPUs shared by everything",
            flush=True,
        )
        results: dict[int, list[dict]] = {}
        for count in args.workers:
            for n in range(args.runs):
                r = one_run(lab, admin_url, redis_url, args.subscribers, count, f"{count}_{n}")
                results.setdefault(count, []).append(r)
                c = r["cores"]
                print(
                    f"{count} worker(s) on {dict(r['hosts'])}, run {n + 1}: {r['rate']:6.0f} emails/s, "
                    f"reference {r['reference']:6.0f}/s ({r['sessions']} sessions, {r['bytes']} bytes), "
                    f"ratio {r['rate'] / r['reference']:.2f}\n"
                    f"    checked: {r['sent']} rows, one per subscriber, each address once at the sink "
                    f"(by client {r['clients']})\n"
                    f"    cores busy: workers {c['workers']:.2f}, postgres {c['postgres']:.2f}, "
                    f"redis {c['redis']:.2f}, sink {c['sink']:.2f}; machine {c['machine']:.2f} of "
                    f"{os.cpu_count()}; {r['cpu_ms']:.2f} worker CPU ms per email "
                    f"({r['life_cpu_ms']:.2f} over their lives),\n    peak RSS "
                    f"{r['rss_mb']:.0f} MB per worker process, "
                    f"at most {r['connections']} PostgreSQL connections; backends seen at the polls: "
                    + ", ".join(f"{k} {v}" for k, v in r["waits"].most_common(5)),
                    flush=True,
                )
        print("\nworkers   emails/s min median max   reference min median max   ratio (median)")
        for count, runs in results.items():
            rates, refs = [r["rate"] for r in runs], [r["reference"] for r in runs]
            print(
                f"{count:>7}   {spread(rates)}             {spread(refs)}       "
                f"{statistics.median(rates) / statistics.median(refs):.2f}"
            )
    finally:
        lab.close()


if __name__ == "__main__":
    main()
