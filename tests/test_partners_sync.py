"""Two stores in sync over the wire: two engines as real gunicorn servers on loopback, two databases
(SQLite files or PostgreSQL schemas), two Redis databases; push, pull and the scheduled exchange.

The schedule is driven by the tick (``sync.enqueue_due``) and the stores' own jobs, never by
sleeping; "a day later" moves the partner's ``next_sync_at`` back a day, because the servers
run in their own processes on the real clock (a travelled clock would only make the requests'
timestamps look forged to them). The kill is placed by state: when the puller's first RQ
command (the enqueue of the first chunk's invitations, right after that chunk committed)
reaches a Redis proxy the test sits in.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select

from newsletter.cli import cli as newsletter_cli
from newsletter.core import clock
from newsletter.core.runtime import get_runtime
from newsletter.models import (
    ConsentAction,
    ConsentEvent,
    Frequency,
    OutboxEmail,
    Partner,
    PartnerImport,
    PartnerInvitation,
    PartnerShare,
    PartnerSuppression,
    Subscriber,
    SubscriberStatus,
)
from newsletter.models.partners import PartnerExchange, PartnerInviteDay
from newsletter.models.subscribers import address_hash
from newsletter.partners import files, signing
from newsletter.partners.exchange import insert_rows
from newsletter.partners.registry import update_partner
from newsletter.partners.sync import enqueue_due
from newsletter.subscribers import links
from newsletter.subscribers.jobs import sweep_outbox
from newsletter.subscribers.partner_cap import next_day
from tests.conftest import REDIS_URL, REDIS_URL_B, csrf_token, jobs_use
from tests.feedback_helpers import wait_for
from tests.test_partners import SECRET, grant_at

if TYPE_CHECKING:
    from tests.partner_stores import Store

pytest_plugins = ["tests.partner_stores"]
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: seconds a dead holder keeps a partner's sync lock (short, so the test can wait it out)
LOCK_SECONDS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _settings(
    store_id: str, name: str, port: int, spool: Path, database_url: str, redis_url: str, **extra: str
) -> dict:
    return dict(
        STORE_ID=store_id,
        STORE_NAME=name,
        BASE_URL=f"http://127.0.0.1:{port}",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        PARTNER_SPOOL_DIR=str(spool),
        PARTNER_RETRIES="1",
        PARTNER_TIMEOUT="60",
        PARTNER_LOCK_SECONDS=str(LOCK_SECONDS),
        **extra,
    )


def env_of(store: Store) -> dict[str, str]:
    s = store.settings
    return {
        **os.environ,
        **store.env(),
        "NEWSLETTER_INSTANCE_PATH": str(Path(s.partner_spool_dir).parent / "instance"),
        "NEWSLETTER_PARTNER_SPOOL_DIR": s.partner_spool_dir,
        "NEWSLETTER_PARTNER_RETRIES": str(s.partner_retries),
        "NEWSLETTER_PARTNER_LOCK_SECONDS": str(s.partner_lock_seconds),
        "NEWSLETTER_PARTNER_TIMEOUT": str(s.partner_timeout),
        "NEWSLETTER_PARTNER_API_RATE_LIMIT": "/".join(map(str, s.partner_api_rate_limit)),
        "NEWSLETTER_PARTNER_INVITES_PER_DAY": str(s.partner_invites_per_day),
    }


def cli(store: Store, *args: str, env: dict[str, str] | None = None):
    """``newsletter ARGS`` in this process with the store's whole environment (spool, retries, lock)
    and ``env`` on top."""
    result = CliRunner().invoke(newsletter_cli, list(args), env=env_of(store) | (env or {}))
    built = get_runtime()
    if built is not store.runtime:  # the command built its own app: close its connections
        built.engine.dispose()
        built.redis.close()
    jobs_use(store.runtime)
    return result


def gunicorn(store: Store, port: int, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "--workers",
                "1",
                "--threads",
                "4",
                "--bind",
                f"127.0.0.1:{port}",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env_of(store),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )

    def up():
        assert proc.poll() is None, log.read_text()
        try:  # unsigned: the API answers 401, which says it is serving
            return (
                requests.get(f"http://127.0.0.1:{port}/api/partners/x/export", timeout=30).status_code == 401
            )
        except requests.RequestException:  # bound, but its worker is still importing the app
            return False

    try:
        wait_for(up, timeout=180, what=f"gunicorn of {store.store_id} on :{port}")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


@pytest.fixture
def pair_settings() -> dict[str, str]:
    """Settings for both stores of ``pair`` (their apps here and their servers); a test overrides
    it with ``@pytest.mark.parametrize("pair_settings", [{...}])``."""
    return {}


@pytest.fixture
def pair(
    make_app, database_url, second_database_url, redis_conn, redis_b, smtp_sink, tmp_path, pair_settings
):
    """Stores A and B, each served by its own gunicorn and known to the other with its URL, sync daily."""
    from tests.partner_stores import Store  # a plugin of this module: imported once pytest loaded it

    ports = {"store-a": _free_port(), "store-b": _free_port()}
    a = Store(
        make_app(
            **_settings(
                "store-a",
                "Store A",
                ports["store-a"],
                tmp_path / "a" / "spool",
                database_url,
                REDIS_URL,
                **pair_settings,
            )
        ),
        "store-a",
    )
    b = Store(
        make_app(
            **_settings(
                "store-b",
                "Store B",
                ports["store-b"],
                tmp_path / "b" / "spool",
                second_database_url,
                REDIS_URL_B,
                **pair_settings,
            )
        ),
        "store-b",
    )
    for store, other, name in ((a, "store-b", "Store B"), (b, "store-a", "Store A")):
        assert store.cli("partners", "add", other, name, "--secret", SECRET).exit_code == 0
        done = store.cli(
            "partners", "update", other, "--url", f"http://127.0.0.1:{ports[other]}", "--sync", "daily"
        )
        assert done.exit_code == 0, done.output
    servers = []
    try:
        for store in (a, b):
            servers.append(
                gunicorn(store, ports[store.store_id], tmp_path / f"gunicorn-{store.store_id}.log")
            )
        yield a, b
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=60)


def history(store: Store) -> list[tuple]:
    with store.runtime.sessions() as session:
        return [
            (r.direction, r.channel, r.status, r.records, r.invited, r.skipped, r.error)
            for r in session.scalars(select(PartnerExchange).order_by(PartnerExchange.id))
        ]


def invited_by(smtp_sink, store_name: str) -> list[str]:
    """Who got an invitation naming ``store_name`` as the partner their consent came from."""
    return sorted(m["To"] for m in smtp_sink.take() if store_name in m.get_body(("plain",)).get_content())


def a_day_later(store: Store, partner_id: str) -> None:
    """The partner's next exchange becomes due, as if the day had passed (the servers keep real time)."""
    with store.runtime.sessions() as session:
        partner = session.get(Partner, partner_id)
        partner.next_sync_at -= timedelta(days=1)
        session.commit()


def test_two_stores_sync_both_ways_on_schedule(pair, smtp_sink):
    a, b = pair
    grant_at(a, smtp_sink, "ann@example.com", partners=("store-b",))
    grant_at(a, smtp_sink, "bob@example.com", partners=())  # did not consent: stays at A
    grant_at(b, smtp_sink, "cat@example.com", partners=("store-a",))
    grant_at(b, smtp_sink, "dan@example.com", partners=())

    # A's tick: its exchange with B is due (scheduled just now); a job pushes, then pulls.
    assert a.job(enqueue_due) == ["store-b"]
    a.work()
    b.work()  # B's invitations, enqueued by B's server when A's push arrived
    assert sorted(m["To"] for m in smtp_sink.take()) == ["ann@example.com", "cat@example.com"]  # invitations
    with a.runtime.sessions() as session:
        cat = session.scalar(select(Subscriber).where(Subscriber.email == "cat@example.com"))
        assert cat.status == SubscriberStatus.PENDING
        assert session.scalar(select(Subscriber).where(Subscriber.email == "dan@example.com")) is None
        assert session.get(Partner, "store-b").next_sync_at > clock.now() + timedelta(hours=23)
    with b.runtime.sessions() as session:
        assert session.scalar(select(Subscriber.status).where(Subscriber.email == "ann@example.com")) == (
            SubscriberStatus.PENDING
        )
        assert session.scalar(select(Subscriber).where(Subscriber.email == "bob@example.com")) is None
    assert history(a) == [
        ("export", "push", "done", 1, 1, {}, None),
        ("import", "pull", "done", 1, 1, {}, None),
    ]
    assert history(b) == [
        ("import", "api", "done", 1, 1, {}, None),  # A's push, as B's server took it
        ("export", "api", "done", 1, 0, {}, None),  # A's pull, as B's server served it
    ]
    assert a.job(enqueue_due) == []  # not due again before a day

    # B's tick: B has never pushed or pulled, so everything consented travels; nobody is invited twice.
    assert b.job(enqueue_due) == ["store-a"]
    b.work()
    a.work()
    assert smtp_sink.take() == []
    assert [row[:5] for row in history(b)[2:]] == [
        ("export", "push", "done", 1, 0),
        ("import", "pull", "done", 1, 0),
    ]
    assert history(b)[3][5] == {"invited_recently": 1}

    # A day later a new person at A consents: only she travels, and B's side has nothing new.
    grant_at(a, smtp_sink, "eve@example.com", partners=("store-b",))
    a_day_later(a, "store-b")
    assert a.job(enqueue_due) == ["store-b"]
    a.work()
    b.work()
    assert invited_by(smtp_sink, "Store A") == ["eve@example.com"]
    push, pull = history(a)[-2:]
    assert push[:5] == ("export", "push", "done", 1, 1) and pull[:5] == ("import", "pull", "done", 0, 0)
    with a.runtime.sessions() as session:
        rows = list(session.scalars(select(PartnerExchange).order_by(PartnerExchange.id)))
    assert rows[-2].previous_id == rows[0].id and rows[-1].previous_id == rows[1].id

    shown = cli(a, "partners", "history", "store-b")
    assert shown.exit_code == 0
    lines = shown.output.splitlines()
    assert len(lines) == 6  # A's push and pull, B's push and pull as A's server took them, A's again
    assert [line.split()[3:5] for line in lines] == [
        ["export", "push"],
        ["import", "pull"],
        ["import", "api"],
        ["export", "api"],
        ["export", "push"],
        ["import", "pull"],
    ]
    assert "  done     records 1  invited 1  after #1" in lines[4]
    assert "  done     records 0  invited 0  after #2" in lines[5]
    assert "skipped: invited recently 1" in lines[2]


# --- an exchange killed half-way ----------------------------------------------------------------

PEOPLE = 2500  # three chunks of the import


def consented_people(store: Store, count: int, partner: str = "store-b") -> list[str]:
    """``count`` confirmed subscribers who agreed to be shared with ``partner`` (straight into the tables)."""
    emails = [f"person{i}@example.com" for i in range(count)]
    now = clock.now()
    with store.runtime.sessions() as session:
        ids = insert_rows(
            session,
            Subscriber,
            [
                {
                    "email": e,
                    "email_hash": address_hash(e),
                    "first_name": None,
                    "status": SubscriberStatus.ACTIVE,
                    "created_at": now,
                    "confirmed_at": now,
                    "frequency": Frequency.ANY,
                    "time_zone": "UTC",
                }
                for e in emails
            ],
            returning=("id",),
        )
        insert_rows(
            session,
            PartnerShare,
            [
                {
                    "subscriber_id": sid,
                    "partner_id": partner,
                    "granted": True,
                    "updated_at": now,
                    "granted_at": now,
                    "wording_version": "partner-share-2026-11",
                    "wording_hash": "b" * 64,
                    "source": "web:subscribe",
                }
                for (sid,) in ids
            ],
        )
        session.commit()
    return emails


class RedisProxy:
    """Forwards a client's Redis traffic; calls ``seen`` (and forwards nothing more) at the first
    command that names an RQ key."""

    def __init__(self, target_url: str):
        host_port = target_url.split("//")[1].split("/")[0]
        self.target = (host_port.split(":")[0], int(host_port.split(":")[1]))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.hit = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source, target, watch):
        try:
            while data := source.recv(65536):
                if watch and (b"rq:job:" in data or b"rq:queue:" in data):
                    self.hit.set()
                    return  # held: the client waits for an answer that never comes
                target.sendall(data)
        except OSError:
            pass

    def close(self):
        self.server.close()


def run_pull(store: Store, redis_url: str | None = None) -> subprocess.Popen:
    env = env_of(store)
    if redis_url:
        env["NEWSLETTER_REDIS_URL"] = redis_url
    return subprocess.Popen(
        [str(BIN / "newsletter"), "partners", "pull", "store-a"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_pull_killed_half_way_resumes_and_invites_nobody_twice(pair, redis_b):
    a, b = pair
    emails = consented_people(a, PEOPLE)
    proxy = RedisProxy(b.settings.redis_url)
    try:
        proc = run_pull(b, f"redis://127.0.0.1:{proxy.port}/{b.settings.redis_url.rsplit('/', 1)[1]}")

        def enqueuing():
            assert proc.poll() is None, proc.stdout.read()
            return proxy.hit.is_set()

        wait_for(enqueuing, timeout=180, what="the puller's enqueue of the first chunk's invitations")
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    finally:
        proxy.close()
    with b.runtime.sessions() as session:
        [log] = session.scalars(select(PartnerImport))
        assert (log.applied_records, log.completed_at) == (files.CHUNK_RECORDS, None)
        [row] = session.scalars(select(PartnerExchange))
        assert (row.direction, row.channel, row.status) == ("import", "pull", "running")
    assert b.count(PartnerInvitation) == files.CHUNK_RECORDS
    [kept] = Path(b.settings.partner_spool_dir).glob("pull-store-a.*.jsonl")

    # The dead puller's lock outlives it only until it expires: meanwhile another pull is refused.
    busy = cli(b, "partners", "pull", "store-a")
    assert busy.exit_code == 1 and "another exchange with store-a is running" in busy.output
    wait_for(lambda: not redis_b.exists("nl:partner-sync:store-a"), timeout=60, what="the lock to expire")

    again = run_pull(b)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    lines = output.splitlines()
    assert (
        lines[0] == f"resumed the cut-off exchange {row.id} with store-a: {PEOPLE} records, invited {PEOPLE}"
    )
    assert lines[1].endswith(": 0 records, invited 0")  # the fresh pull: nothing changed at A since
    assert not kept.exists()
    with b.runtime.sessions() as session:
        per_person = Counter(
            session.scalars(
                select(Subscriber.email).join(
                    PartnerInvitation, PartnerInvitation.subscriber_id == Subscriber.id
                )
            )
        )
        rows = list(session.scalars(select(PartnerExchange).order_by(PartnerExchange.id)))
    assert per_person == Counter(emails)
    assert b.count(OutboxEmail) == PEOPLE
    assert [(r.status, r.records, r.invited, r.error) for r in rows] == [
        ("done", PEOPLE, PEOPLE, None),
        ("done", 0, 0, None),
    ]
    assert rows[1].previous_id == rows[0].id and rows[0].remote_id is not None


# --- a partner that fails ---------------------------------------------------------------------


class FakePartner:
    """A loopback HTTP server standing in for a partner's engine that misbehaves."""

    def __init__(self, answer):
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append(dict(self.headers))
                status, body = answer(self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def forged_export(tmp_path) -> bytes:
    """A's export of 1,500 people for B, correctly signed, then one byte of the last record changed."""
    from tests.test_partners import contact, signed_file

    path = signed_file(tmp_path, [contact(f"p{i}@example.com") for i in range(1500)])
    data = bytearray(path.read_bytes())
    at = data.rindex(b"p1499@")
    data[at] = ord("q")
    return bytes(data)


def point(store: Store, partner_id: str, url: str) -> None:
    with store.runtime.sessions() as session:
        update_partner(session, partner_id, url=url)
        session.commit()


@pytest.mark.parametrize("failure", ["5xx", "forged", "503-retried", "unreachable", "wrong-secret"])
def test_a_failing_partner_leaves_nothing_half_written(pair, tmp_path, failure):
    _, b = pair
    body = {
        "5xx": (500, b'{"error": "database is down"}'),
        "503-retried": (503, b'{"error": "restarting"}'),
        "forged": (200, forged_export(tmp_path)),
    }.get(failure)
    fake = FakePartner(lambda path: body)
    try:
        if failure == "unreachable":
            point(b, "store-a", f"http://127.0.0.1:{_free_port()}")
        elif failure == "wrong-secret":
            with b.runtime.sessions() as session:
                session.get(Partner, "store-a").secret = "another-secret-" + "x" * 30
                session.commit()
        else:
            point(b, "store-a", fake.url)
        result = cli(b, "partners", "pull", "store-a")
    finally:
        fake.close()
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    expected = {
        "5xx": "answered 500 (database is down); nothing was imported",
        "503-retried": "answered 503 (restarting)",
        "forged": "answer was refused: bad signature: the file was changed, or signed with another secret",
        "unreachable": "cannot reach store-a at http://127.0.0.1:",
        "wrong-secret": "refused our signature (401: bad signature)",
    }[failure]
    assert expected in line, line
    if failure == "503-retried":  # retried once (PARTNER_RETRIES=1), each attempt with its own nonce
        assert len({r["X-Partner-Nonce"] for r in fake.requests}) == len(fake.requests) == 2
    for model in (Subscriber, PartnerImport, PartnerInvitation, OutboxEmail):
        assert b.count(model) == 0, model
    assert list(Path(b.settings.partner_spool_dir).glob("*")) == []
    [row] = history(b)
    assert row[:5] == ("import", "pull", "failed", 0, 0) and expected in row[6]


def test_a_push_the_partner_could_not_take_is_sent_again_byte_for_byte(pair, smtp_sink):
    """A push answered 5xx keeps its file; the next push sends those bytes first, then what is new."""
    a, b = pair
    grant_at(a, smtp_sink, "ann@example.com", partners=("store-b",))
    fake = FakePartner(lambda path: (502, b'{"error": "bad gateway"}'))
    try:
        with a.runtime.sessions() as session:
            url = session.get(Partner, "store-b").url
        point(a, "store-b", fake.url)
        failed = cli(a, "partners", "push", "store-b")
    finally:
        fake.close()
    assert failed.exit_code == 1 and "answered 502 (bad gateway)" in failed.output
    [kept] = Path(a.settings.partner_spool_dir).glob("push-store-b.*.jsonl")
    assert b.count(Subscriber) == 0

    point(a, "store-b", url)
    grant_at(a, smtp_sink, "bea@example.com", partners=("store-b",))
    pushed = cli(a, "partners", "push", "store-b")
    assert pushed.exit_code == 0, pushed.output
    lines = pushed.output.splitlines()
    assert lines[0].startswith("resumed the cut-off exchange 1 with store-b: 1 records, invited 1")
    assert lines[1].endswith(": 1 records, invited 1")  # only bea: ann travelled in the resent file
    assert not kept.exists()
    b.work()
    assert invited_by(smtp_sink, "Store A") == ["ann@example.com", "bea@example.com"]
    assert [r[:5] for r in history(a)] == [("export", "push", "done", 1, 1), ("export", "push", "done", 1, 1)]
    with a.runtime.sessions() as session:
        first, second = session.scalars(select(PartnerExchange).order_by(PartnerExchange.id))
        assert second.previous_id == first.id
    with b.runtime.sessions() as session:
        remote = list(session.scalars(select(PartnerExchange.remote_id).order_by(PartnerExchange.id)))
    assert remote == [first.id, second.id]


def test_partner_url_and_sync_are_checked(stores):
    a, _ = stores()
    cases = {
        ("--url", "http://partner.example"): "plain http only on loopback",
        ("--url", "ftp://partner.example"): "must be https://host",
        ("--url", "https://user:pw@partner.example"): "no query, fragment or credentials",
    }
    for args, message in cases.items():
        done = a.cli("partners", "update", "store-b", *args)
        assert done.exit_code == 1 and message in done.output, done.output
    done = a.cli("partners", "update", "store-b", "--sync", "weekly")
    assert done.exit_code == 1 and "needs the partner's URL" in done.output
    done = a.cli("partners", "update", "store-b", "--url", "https://b.example/", "--sync", "weekly")
    assert done.exit_code == 0 and "url https://b.example, sync weekly, next at" in done.output
    added = a.cli("partners", "add", "store-c", "Store C", "--url", "https://c.example", "--sync", "daily")
    assert added.exit_code == 0, added.output
    with a.runtime.sessions() as session:
        c = session.get(Partner, "store-c")
        assert (c.url, c.sync, c.next_sync_at is not None) == ("https://c.example", "daily", True)
    assert a.cli("partners", "update", "store-c", "--sync", "off").exit_code == 0
    with a.runtime.sessions() as session:
        assert session.get(Partner, "store-c").next_sync_at is None


# --- over the wire: a withdrawal, the data download, the signed header, the limits ------------------


def person(store: Store, email: str) -> Subscriber:
    with store.runtime.sessions() as session:
        return session.scalar(select(Subscriber).where(Subscriber.email == email))


def preferences_over_http(store: Store, email: str, partners: list[str]) -> None:
    """The person saves the preference centre of ``store``'s server with these partners ticked
    (a real browser's requests: the page, its CSRF token and cookie, the form)."""
    url = links.preferences_url(store.settings, person(store, email))
    with requests.Session() as browser:
        page = browser.get(url, timeout=60)
        assert page.status_code == 200, page.text
        saved = browser.post(
            url,
            data={
                "csrf_token": csrf_token(page.text),
                "frequency": "any",
                "time_zone": "UTC",
                "first_name": "Ann",
                "topics": ["newsletter"],
                "partners": partners,
            },
            headers={"User-Agent": "wire-test/1.0"},
            timeout=60,
        )
    assert saved.status_code == 200 and "Saved." in saved.text, saved.text


def download_over_http(store: Store, email: str) -> dict:
    """The person's "download my data" from ``store``'s server."""
    url = links.preferences_url(store.settings, person(store, email)) + "/data.json"
    response = requests.get(url, timeout=60)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    return response.json()


def exchanges(store: Store) -> list[PartnerExchange]:
    with store.runtime.sessions() as session:
        return list(session.scalars(select(PartnerExchange).order_by(PartnerExchange.id)))


def took(store: Store) -> PartnerExchange:
    """The last push the store's server took (an ``import api`` row)."""
    return [r for r in exchanges(store) if (r.direction, r.channel) == ("import", "api")][-1]


def scheduled_exchange(a: Store, first: bool = False) -> None:
    """A's tick a day on (or now, for the first): its job pushes to B's server, then pulls from it."""
    if not first:
        a_day_later(a, "store-b")
    assert a.job(enqueue_due) == ["store-b"]
    a.work()


def test_a_withdrawal_at_a_reaches_b_and_the_download_at_a_names_the_disclosure(pair, smtp_sink):
    a, b = pair
    grant_at(a, smtp_sink, "ann@example.com")
    scheduled_exchange(a, first=True)
    b.work()
    assert invited_by(smtp_sink, "Store A") == ["ann@example.com"]  # delivered; she has not confirmed
    grant_at(a, smtp_sink, "bob@example.com")
    scheduled_exchange(a)  # bob travels; B's worker is not run: his invitation is still unsent
    first_push, _, second_push, _ = exchanges(a)
    assert (first_push.records, second_push.records) == (1, 1)

    # "Download my data" at A's server lists each disclosure to B: the partner, the exchange, when.
    for email, push in (("ann@example.com", first_push), ("bob@example.com", second_push)):
        [shown] = download_over_http(a, email)["partner_disclosures"]
        assert (shown["partner"], shown["partner_name"], shown["exchange_id"]) == (
            "store-b",
            "Store B",
            push.id,
        )
        at = datetime.fromisoformat(shown["at"].removesuffix("Z"))
        assert push.started_at <= at <= push.finished_at

    # Both withdraw in A's preference centre; the next scheduled exchange carries the withdrawals.
    preferences_over_http(a, "ann@example.com", partners=[])
    preferences_over_http(a, "bob@example.com", partners=[])
    scheduled_exchange(a)
    push = exchanges(a)[-2]
    assert (push.direction, push.channel, push.status, push.records, push.invited) == (
        "export",
        "push",
        "done",
        2,
        0,
    )
    with b.runtime.sessions() as session:
        assert (took(b).status, took(b).remote_id, took(b).records) == ("done", push.id, 2)
        opted_out = set(
            session.scalars(
                select(PartnerSuppression.email_hash).where(PartnerSuppression.partner_id == "store-a")
            )
        )
        assert opted_out == {address_hash("ann@example.com"), address_hash("bob@example.com")}
        outcomes = {
            session.get(Subscriber, e.subscriber_id).email: (e.details["partner"], e.details["outcome"])
            for e in session.scalars(
                select(ConsentEvent).where(ConsentEvent.action == ConsentAction.PARTNER_WITHDRAWN)
            )
        }
        assert outcomes == {
            "ann@example.com": ("store-a", "not invited on its word again"),
            "bob@example.com": ("store-a", "invitation cancelled"),
        }
        [bobs] = session.scalars(
            select(OutboxEmail).where(OutboxEmail.subscriber_id == person(b, "bob@example.com").id)
        )
        assert bobs.sent_at is None and "withdrew" in bobs.last_error
    b.work()  # bob's queued invitation job runs: the row is given up, nothing goes out
    b.job(sweep_outbox, older_than=timedelta(0))
    b.work()
    assert smtp_sink.take() == []

    # Ann shares with B again at A: she travels again, and B does not invite her on A's word.
    preferences_over_http(a, "ann@example.com", partners=["store-b"])
    scheduled_exchange(a)
    b.work()
    assert smtp_sink.take() == []
    with b.runtime.sessions() as session:
        assert (took(b).records, took(b).invited, took(b).skipped) == (1, 0, {"opted_out_at_partner": 1})
        assert session.scalar(select(Subscriber.status).where(Subscriber.email == "ann@example.com")) == (
            SubscriberStatus.PENDING
        )
    shown = download_over_http(a, "ann@example.com")
    assert [d["exchange_id"] for d in shown["partner_disclosures"]] == [first_push.id, exchanges(a)[-2].id]
    assert shown["partner_sharing"] == {"store-b": True}


def test_the_previous_exchange_header_is_signed(pair, smtp_sink):
    """A pull names the partner's last export in a header the signature covers: changed on the way,
    the request is refused; an engine of the first release (v1, header unsigned) gets everything."""
    a, _ = pair
    grant_at(a, smtp_sink, "ann@example.com")
    path = "/api/partners/store-b/export"
    url = a.settings.base_url + path

    def export(headers) -> tuple[int, list[dict]]:
        response = requests.get(url, headers=headers, timeout=60)
        lines = [json.loads(line) for line in response.content.splitlines()]
        return response.status_code, lines

    status, lines = export(signing.request_headers(SECRET, "GET", path))
    assert status == 200 and [r["email"] for r in lines[1:-1]] == ["ann@example.com"]
    first = lines[0]["exchange"]
    grant_at(a, smtp_sink, "bea@example.com")

    status, lines = export(signing.request_headers(SECRET, "GET", path, previous=first))
    assert status == 200 and [r["email"] for r in lines[1:-1]] == ["bea@example.com"]  # only what changed
    assert lines[0]["previous"] == first
    done = len(exchanges(a))

    for forged in ("0", str(first + 1), "", "0" + str(first)):  # "01" means 1, but is not what was signed
        headers = signing.request_headers(SECRET, "GET", path, previous=first)
        headers[signing.PREVIOUS_HEADER] = forged
        status, lines = export(headers)
        assert (status, lines) == (401, [{"error": "bad signature"}]), forged
    unsigned = signing.request_headers(SECRET, "GET", path)
    unsigned[signing.PREVIOUS_HEADER] = str(first)  # added to a request signed without it
    assert export(unsigned)[0] == 401
    assert len(exchanges(a)) == done  # a refused request exports nothing, discloses nothing

    v1 = signing.request_headers(SECRET, "GET", path, previous=first)
    v1[signing.SIGNATURE_HEADER] = signing.request_signature(
        SECRET,
        "GET",
        path,
        v1[signing.TIMESTAMP_HEADER],
        v1[signing.NONCE_HEADER],
        hashlib.sha256(b"").hexdigest(),
        version=1,
    )
    status, lines = export(v1)
    assert status == 200 and [r["email"] for r in lines[1:-1]] == ["ann@example.com", "bea@example.com"]
    assert "previous" not in lines[0]  # the unsigned header was not used: a full export


class Relay:
    """A loopback HTTP relay in front of a partner's server that notes each answer's status and
    when it passed; ``before(n)`` runs before the n-th request (from 0) goes on."""

    def __init__(self, target: str, before=lambda n: None):
        self.seen: list[tuple[int, float, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                before(len(outer.seen))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.request(
                    self.command, target + self.path, headers=headers, data=body, timeout=120
                )
                outer.seen.append((answer.status_code, time.monotonic(), answer.headers.get("Retry-After")))
                self.send_response(answer.status_code)
                for name in ("Content-Type", "Retry-After"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _relay  # noqa: N815 - http.server's names

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


RATE_KEY = "nl:limit:partner-api:store-a"  # B's count of A's requests


@pytest.mark.parametrize("pair_settings", [{"PARTNER_API_RATE_LIMIT": "2/600"}])
def test_the_partner_rate_limit_holds_across_the_wire(pair, redis_b, smtp_sink):
    a, b = pair
    once = {"NEWSLETTER_PARTNER_RETRIES": "0"}
    grant_at(a, smtp_sink, "ann@example.com")
    assert cli(a, "partners", "push", "store-b", env=once).exit_code == 0  # A's requests 1 and 2 ...
    assert cli(a, "partners", "pull", "store-b", env=once).exit_code == 0
    grant_at(a, smtp_sink, "bea@example.com")
    before = {model: (a.count(model), b.count(model)) for model in (Subscriber, PartnerImport, OutboxEmail)}

    refused = cli(a, "partners", "pull", "store-b", env=once)  # ... and 3, 4: over B's limit
    refused_push = cli(a, "partners", "push", "store-b", env=once)
    for result in (refused, refused_push):
        assert result.exit_code == 1
        [line] = result.output.splitlines()
        assert (
            "store-b at http://127.0.0.1:" in line
            and (
                "limits our requests (429: too many requests: at most 2 per 600 seconds "
                "(PARTNER_API_RATE_LIMIT)); try again in "
            )
            in line
        ), line
        assert 0 < int(line.rsplit(" ", 2)[-2]) <= 600
    assert {model: (a.count(model), b.count(model)) for model in before} == before
    assert [(r.direction, r.channel, r.status) for r in exchanges(b)] == [
        ("import", "api", "done"),
        ("export", "api", "done"),
    ]  # B wrote nothing for the refused requests
    *_, pull, push = exchanges(a)
    assert (pull.channel, pull.status, push.channel, push.status) == ("pull", "failed", "push", "failed")
    assert "(429: too many requests" in pull.error and "(429: too many requests" in push.error
    assert list(Path(a.settings.partner_spool_dir).glob("pull-*")) == []  # nothing downloaded
    [kept] = Path(a.settings.partner_spool_dir).glob("push-store-b.*.jsonl")  # B read none of it

    # With a retry left, A's client waits as long as B's Retry-After says, then goes through.
    def window_nearly_over(n):
        if n == 0:
            redis_b.pexpire(RATE_KEY, 2000)

    with a.runtime.sessions() as session:
        url = session.get(Partner, "store-b").url
    relay = Relay(url, before=window_nearly_over)
    try:
        point(a, "store-b", relay.url)
        pushed = cli(a, "partners", "push", "store-b")  # PARTNER_RETRIES=1
    finally:
        relay.close()
        point(a, "store-b", url)
    assert pushed.exit_code == 0, pushed.output
    lines = pushed.output.splitlines()
    assert lines[0].startswith(f"resumed the cut-off exchange {push.id} with store-b: 1 records, invited 1")
    assert lines[1].endswith(": 0 records, invited 0")
    assert not kept.exists()
    (refusal, refused_at, wait), (first, passed_at, _), (second, *_) = relay.seen
    assert (refusal, first, second) == (429, 200, 200) and int(wait) in (1, 2)
    assert passed_at - refused_at >= int(wait)  # not before B said
    b.work()
    assert invited_by(smtp_sink, "Store A") == ["ann@example.com", "bea@example.com"]  # each once


@pytest.mark.parametrize("pair_settings", [{"PARTNER_INVITES_PER_DAY": "2"}])
def test_the_daily_invitation_cap_holds_for_a_push(pair, smtp_sink):
    a, b = pair
    emails = consented_people(a, 5)
    pushed = cli(a, "partners", "push", "store-b")
    assert pushed.exit_code == 0 and pushed.output.rstrip().endswith(": 5 records, invited 5"), pushed.output
    b.work()  # B's worker sends its invitations: two today, the rest wait for the next UTC day
    today = sorted(m["To"] for m in smtp_sink.take())
    assert len(today) == 2
    midnight = next_day(clock.now())
    with b.runtime.sessions() as session:
        rows = session.scalars(select(OutboxEmail).order_by(OutboxEmail.id)).all()
        sent = [r for r in rows if r.sent_at is not None]
        held = [r for r in rows if r.sent_at is None]
        assert len(sent) == 2 and len(held) == 3
        assert all((r.not_before, r.failed_at, r.attempts) == (midnight, None, 0) for r in held)
        [day] = session.scalars(select(PartnerInviteDay)).all()
        assert (day.partner_id, day.day, day.sent) == ("store-a", clock.now().date(), 2)
    try:
        b.job(sweep_outbox, older_than=timedelta(0))
        b.work()
        assert smtp_sink.take() == []  # still today: held, not given up
        later = []
        for _ in range(2):  # the next days, B's clock on past midnight
            clock.travel(next_day(clock.now()) - clock.now() + timedelta(minutes=1))
            b.job(sweep_outbox)
            b.work()
            later.append(sorted(m["To"] for m in smtp_sink.take()))
        assert [len(day) for day in later] == [2, 1]
        assert sorted(today + later[0] + later[1]) == sorted(emails)  # each once, none dropped
    finally:
        clock.reset()
