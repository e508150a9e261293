"""Fixtures on real parts: Redis, SQLite and PostgreSQL, an SMTP server on loopback, Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import redis
from aiosmtpd.controller import Controller
from rq import SimpleWorker
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from newsletter import create_app
from newsletter.core import clock
from newsletter.core.migrate import upgrade
from newsletter.core.runtime import Runtime, set_runtime

# --- Redis databases: one pair per xdist worker ------------------------------------------
#
# Store A uses NEWSLETTER_TEST_REDIS_URL, store B (the partner tests) NEWSLETTER_TEST_REDIS_URL_B.
# Under pytest-xdist worker gwI takes the pair two databases further down: DB A-2i and B-2i
# (defaults 15/14, 13/12, ...). Crash tests hand the same URL to their `newsletter worker`s.

#: Redis's default number of databases (redis.conf ``databases``)
REDIS_DATABASES = 16
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw3" under xdist, "" otherwise


def worker_redis_urls(url_a: str, url_b: str, worker: int) -> tuple[str, str]:
    """The (store A, store B) Redis URLs of xdist worker number ``worker``."""
    return _with_db(url_a, -2 * worker), _with_db(url_b, -2 * worker)


def _with_db(url: str, shift: int) -> str:
    base, _, db = url.rpartition("/")
    return f"{base}/{int(db or 0) + shift}"


def _db(url: str) -> int:
    return int(url.rpartition("/")[2] or 0)


def redis_pairs_problem(url_a: str, url_b: str, workers: int) -> str | None:
    """Why ``workers`` workers cannot each have their own pair of Redis databases, or None."""
    dbs = [_db(u) for i in range(workers) for u in worker_redis_urls(url_a, url_b, i)]
    if len(set(dbs)) == len(dbs) and all(0 <= db < REDIS_DATABASES for db in dbs):
        return None
    return (
        f"{workers} test workers need {workers} separate pairs of Redis databases counting down from "
        f"DB {_db(url_a)}/{_db(url_b)} (NEWSLETTER_TEST_REDIS_URL/_B): use fewer workers (-n) or higher "
        f"databases (worker gwI uses DB A-2i and B-2i, 0..{REDIS_DATABASES - 1})"
    )


# Read, not popped: xdist's workers inherit them from the controller (the engine ignores NEWSLETTER_TEST_*).
BASE_REDIS_URL = os.environ.get("NEWSLETTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BASE_REDIS_URL_B = os.environ.get("NEWSLETTER_TEST_REDIS_URL_B", "redis://127.0.0.1:6379/14")
REDIS_URL, REDIS_URL_B = worker_redis_urls(BASE_REDIS_URL, BASE_REDIS_URL_B, int(WORKER[2:] or 0))
PG_URL = os.environ.get("NEWSLETTER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ARTIFACTS = Path(__file__).parent / "artifacts"


# --- Lanes: `--db sqlite` (make test-quick) ------------------------------------------------


def pytest_addoption(parser):
    parser.addoption(
        "--db",
        choices=["all", "sqlite", "postgresql"],
        default="all",
        help="run the database tests on these databases only (deselects the other's params)",
    )


def pytest_configure(config):
    workers = getattr(config.option, "numprocesses", None)
    if not WORKER and isinstance(workers, int) and workers > 1:  # the xdist controller
        problem = redis_pairs_problem(BASE_REDIS_URL, BASE_REDIS_URL_B, workers)
        if problem:
            raise pytest.UsageError(problem)


#: The slowest files go first, so that no worker starts one of them when the rest is done.
HEAVY_FIRST = [
    "test_sending_crash.py",
    "test_reward_codes_crash.py",
    "test_browser_",
    "test_fuzz.py",
    "test_caps.py",
]


def _weight(item) -> int:
    name = item.path.name
    return next((i for i, prefix in enumerate(HEAVY_FIRST) if name.startswith(prefix)), len(HEAVY_FIRST))


def pytest_collection_modifyitems(config, items):
    only = config.getoption("--db")
    if only != "all":
        keep, drop = [], []
        for item in items:
            param = getattr(item, "callspec", None) and item.callspec.params.get("database_url")
            (drop if param not in (None, only) else keep).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    items.sort(key=_weight)  # stable: the order within each file and group stays


# --- SMTP: a real server on loopback that records the raw bytes ---------------------------


class Recorder:
    """aiosmtpd handler keeping every message as received on the wire."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


class SMTPSink:
    def __init__(self, controller: Controller, recorder: Recorder):
        self.controller = controller
        self.recorder = recorder
        self.url = f"smtp://{controller.hostname}:{controller.port}"

    def take(self) -> list[EmailMessage]:
        """Every message received so far (parsed); they count as expected."""
        with self.recorder.lock:
            raw = [m[2] for m in self.recorder.messages]
            self.recorder.messages.clear()
        return [message_from_bytes(r, policy=policy.default) for r in raw]

    def take_envelopes(self) -> list[tuple[str, list[str], EmailMessage]]:
        """Every message so far with its envelope: (MAIL FROM, RCPT TOs, parsed message)."""
        with self.recorder.lock:
            taken = list(self.recorder.messages)
            self.recorder.messages.clear()
        return [
            (sender, rcpts, message_from_bytes(raw, policy=policy.default)) for sender, rcpts, raw in taken
        ]

    def take_raw(self) -> list[bytes]:
        with self.recorder.lock:
            raw = [m[2] for m in self.recorder.messages]
            self.recorder.messages.clear()
        return raw

    def pending(self) -> int:
        return len(self.recorder.messages)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def _smtp_controller():
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield SMTPSink(controller, recorder)
    controller.stop()


@pytest.fixture
def smtp_sink(_smtp_controller: SMTPSink) -> Iterator[SMTPSink]:
    """The SMTP server; a test must take() every message it caused, or it fails."""
    _smtp_controller.take_raw()
    yield _smtp_controller
    unexpected = _smtp_controller.pending()
    _smtp_controller.take_raw()
    assert unexpected == 0, f"{unexpected} email(s) sent that the test did not expect"


# --- Redis ------------------------------------------------------------------------------


@pytest.fixture
def redis_conn() -> Iterator[redis.Redis]:
    """This worker's Redis database, flushed before and after each test."""
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


# --- Databases ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("db") / "template.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


def migrated_pg_schema(prefix: str) -> Iterator[str]:
    """A fresh schema in the ``test`` database, migrated; dropped when the generator ends."""
    schema = f"{prefix}_{WORKER or 'main'}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    upgrade(url)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        _SEEDED_TOPICS[url] = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM topics"))]
    engine.dispose()
    yield url
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


#: each migrated schema's topics as the migrations seeded them (``emptied`` puts them back)
_SEEDED_TOPICS: dict[str, list[dict]] = {}


def emptied(url: str) -> str:
    """Empty every table of a migrated PostgreSQL schema but the seeded ones, and put the seeded topics
    back as they were (a test adds, renames and retires topics: tests/test_topics.py); returns the URL."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename NOT IN ('topics', 'alembic_version')"
                )
            )
        ]
        if tables:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        seeded = _SEEDED_TOPICS.get(url, [])
        if seeded:
            conn.execute(text("DELETE FROM topics WHERE id <> ALL(:ids)"), {"ids": [t["id"] for t in seeded]})
            columns = [c for c in seeded[0] if c != "id"]
            as_json = {c for c in columns if isinstance(seeded[0][c], (dict, list))}  # topics.translations
            assign = ", ".join(
                f"{c} = CAST(:{c} AS json)" if c in as_json else f"{c} = :{c}" for c in columns
            )
            rows = [{c: json.dumps(v) if c in as_json else v for c, v in row.items()} for row in seeded]
            conn.execute(text(f"UPDATE topics SET {assign} WHERE id = :id"), rows)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def _pg_schema_url() -> Iterator[str]:
    """A fresh schema in the ``test`` database, migrated once for the session."""
    yield from migrated_pg_schema("nl_test")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """Every test that uses the database runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "newsletter.sqlite3"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    return emptied(request.getfixturevalue("_pg_schema_url"))


# --- The app -----------------------------------------------------------------------------


@pytest.fixture
def make_app(database_url, redis_conn, smtp_sink, tmp_path):
    """Build an app on the test database, Redis and SMTP sink, with overrides."""
    apps = []

    def factory(**overrides):
        config = {
            "SECRET_KEY": "test-secret",
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "SMTP_URL": smtp_sink.url,
            "BASE_URL": "https://newsletter.test",
            "OUTBOX_DIR": str(tmp_path / "outbox"),
            **overrides,
        }
        app = create_app(config)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    factory.apps = apps  # what the test built, newest last (the `work` fixture runs jobs on it)
    yield factory
    for app in apps:
        app.extensions["newsletter"].engine.dispose()
    clock.reset()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runtime(app) -> Runtime:
    return app.extensions["newsletter"]


def jobs_use(runtime: Runtime) -> Runtime:
    """Make ``runtime`` the one jobs find (``get_runtime()``), as in a worker process built from it.

    The suite's one place that sets the process's runtime: a CLI command run in the test's process
    builds its own app (and runtime), so whatever runs jobs here hands the test's runtime in first.
    """
    set_runtime(runtime)
    return runtime


@pytest.fixture
def work(make_app):
    """Run every queued job now, in this process (RQ's SimpleWorker, burst mode), on the test's runtime:
    that of the app the test built last (``make_app``), or of the default ``app``."""

    def run(queues: list[str] | None = None) -> None:
        from newsletter.core.runtime import QUEUES

        runtime = jobs_use((make_app.apps or [make_app()])[-1].extensions["newsletter"])
        worker = SimpleWorker([runtime.queue(q) for q in (queues or QUEUES)], connection=runtime.redis)
        worker.work(burst=True)

    return run


# --- Helpers -----------------------------------------------------------------------------


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture
def signup(client):
    """POST the signup form as a browser would (CSRF token from the page)."""

    def submit(
        email: str,
        topics=("newsletter",),
        first_name: str = "",
        ip: str = "203.0.113.7",
        website: str = "",
        **extra,
    ):
        page = client.get("/subscribe").get_data(as_text=True)
        data = {
            "csrf_token": csrf_token(page),
            "email": email,
            "first_name": first_name,
            "topics": list(topics),
            "website": website,
            **extra,
        }
        return client.post(
            "/subscribe",
            data=data,
            environ_base={"REMOTE_ADDR": ip},
            headers={"User-Agent": "pytest-browser/1.0"},
        )

    return submit


def confirm_link(message: EmailMessage) -> str:
    body = message.get_body(("plain",)).get_content()
    match = re.search(r"(https?://\S+/confirm/\S+)", body)
    assert match, body
    return match.group(1)


# --- Browser -----------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by Playwright (no browser download)."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def serve(make_app):
    """Serve a fresh app over real HTTP on loopback, with BASE_URL pointing at it."""
    servers = []

    def start(**overrides):
        # Bind first (port 0: the kernel's free port, no race with other workers), then build the app
        # whose BASE_URL names that port.
        served = {}
        server = make_server("127.0.0.1", 0, lambda env, reply: served["app"](env, reply), threaded=True)
        base_url = f"http://127.0.0.1:{server.server_port}"
        app = served["app"] = make_app(BASE_URL=base_url, **overrides)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return app, base_url

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def make_subscriber(runtime):
    """Factory: a confirmed subscriber with topics, straight through the services."""
    from newsletter.models import Subscriber, SubscriberStatus, Subscription, SubscriptionStatus
    from newsletter.models.subscribers import address_hash
    from newsletter.subscribers.signup import topics_by_slug

    def make(
        email: str = "ann@example.com",
        topics=("newsletter",),
        first_name: str | None = "Ann",
        status: SubscriberStatus = SubscriberStatus.ACTIVE,
    ) -> Subscriber:
        with runtime.sessions() as session:
            by_slug = topics_by_slug(session)
            subscriber = Subscriber(
                email=email,
                email_hash=address_hash(email),
                first_name=first_name,
                status=status,
                confirmed_at=clock.now(),
            )
            subscriber.subscriptions = [
                Subscription(topic_id=by_slug[t].id, status=SubscriptionStatus.ACTIVE) for t in topics
            ]
            session.add(subscriber)
            session.commit()
            return subscriber

    return make


def all_links(message: EmailMessage) -> list[str]:
    """Every http(s) URL in a message's text and HTML parts."""
    found: list[str] = []
    for part in message.walk():
        if part.get_content_maintype() == "text":
            found += re.findall(r'https?://[^\s"<>\']+', part.get_content())
    return sorted(set(found))
