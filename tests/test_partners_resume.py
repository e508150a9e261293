"""A partner import SIGKILLed part-way and run again: the same result, nobody invited twice.

The real ``newsletter partners import`` in a subprocess, on SQLite and PostgreSQL. Kills are
placed by state, never by time: *after a commit*, when the importer's first Redis command (the
enqueue of the first chunk's invitations, right after that chunk committed) reaches a socket
the test listens on instead of Redis; *mid-chunk* (PostgreSQL), when the importer waits on a
row lock the test holds (an uncommitted insert of an address in the third chunk), with two
chunks committed and the third one's checkpoint moved in its open transaction.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from newsletter.core.db import make_engine
from newsletter.models import OutboxEmail, PartnerImport, PartnerInvitation, Subscriber
from newsletter.partners.files import CHUNK_RECORDS
from tests.feedback_helpers import wait_for
from tests.test_partners import contact, signed_file

pytest_plugins = ["tests.partner_stores"]
NEWSLETTER = str(Path(sys.executable).parent / "newsletter")
CHUNKS = 4
#: every 100th record is someone for us; the others consented to another store
INVITED = [f"person{i}@example.com" for i in range(0, CHUNKS * CHUNK_RECORDS, 100)]
#: the uninterrupted run's report (test "none" holds it to that)
EXPECTED = {
    "invited": len(INVITED),
    "skipped": {
        "consent_names_another_store": CHUNKS * CHUNK_RECORDS - len(INVITED) - 2,
        "duplicate_in_file": 1,
        "suppressed_here": 1,
    },
}


def records() -> list[dict]:
    rows = [
        contact(f"person{i}@example.com") if i % 100 == 0 else contact(f"other{i}@example.com", to="store-c")
        for i in range(CHUNKS * CHUNK_RECORDS)
    ]
    rows[CHUNK_RECORDS + 50] = contact("gone@example.com")  # suppressed here: our opt-out wins
    rows[-1] = contact(INVITED[0])  # in the file twice, three chunks apart
    return rows


def run_import(store, path, redis_url=None) -> subprocess.Popen:
    env = {**os.environ, **store.env(), "NEWSLETTER_INSTANCE_PATH": str(path.parent / "instance")}
    if redis_url:
        env["NEWSLETTER_REDIS_URL"] = redis_url
    return subprocess.Popen(
        [NEWSLETTER, "partners", "import", "store-a", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def checkpoint(store) -> tuple[int, bool] | None:
    with store.runtime.sessions() as session:
        row = session.execute(select(PartnerImport.applied_records, PartnerImport.completed_at)).first()
    return None if row is None else (row[0], row[1] is not None)


def kill_at_first_redis_command(store, path) -> None:
    """Start the import against a socket that is not Redis; SIGKILL it when its first command arrives."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.05)
        proc = run_import(store, path, f"redis://127.0.0.1:{server.getsockname()[1]}/0")

        def connected():
            assert proc.poll() is None, proc.stdout.read()
            try:
                return server.accept()[0]
            except TimeoutError:
                return None

        conn = wait_for(connected, timeout=120, what="the importer's first Redis command")
        with conn:
            conn.settimeout(None)
            assert conn.recv(1)  # the command is on its way: the importer waits for the answer
            proc.send_signal(signal.SIGKILL)
            proc.communicate()


def kill_while_waiting_on_a_lock(store, path) -> None:
    """Hold an uncommitted insert of a third-chunk address; SIGKILL the import when it waits on it."""
    engine = make_engine(store.settings.database_url)
    try:
        with engine.connect() as conn:
            conn.execute(
                text(
                    "INSERT INTO subscribers (email, email_hash, status, created_at, frequency, time_zone) "
                    "VALUES (:e, :h, 'pending', now(), 'any', 'UTC')"
                ),
                {"e": INVITED[25], "h": _hash(INVITED[25])},
            )
            proc = run_import(store, path)

            def waiting():
                assert proc.poll() is None, proc.stdout.read()
                return checkpoint(store) == (2 * CHUNK_RECORDS, False) and conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                )

            wait_for(waiting, timeout=120, what="the importer to wait on the row lock in chunk 3")
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            conn.rollback()
    finally:
        engine.dispose()


def _hash(email: str) -> str:
    from newsletter.models.subscribers import address_hash

    return address_hash(email)


@pytest.mark.parametrize("kill", ["none", "after-commit", "mid-chunk"])
def test_a_killed_import_resumes_to_the_same_result_and_invites_nobody_twice(
    stores, smtp_sink, tmp_path, database_url, kill
):
    from newsletter.subscribers.jobs import sweep_outbox

    if kill == "mid-chunk" and not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: an importer waiting on it has written nothing of its chunk")
    _, b = stores()
    assert b.cli("suppressions", "add", "gone@example.com", "--reason", "unsubscribed").exit_code == 0
    path = signed_file(tmp_path, records())

    if kill == "after-commit":
        kill_at_first_redis_command(b, path)
        assert checkpoint(b) == (CHUNK_RECORDS, False)  # the first chunk, whole, and no more
        assert b.count(PartnerInvitation) == b.count(OutboxEmail) == CHUNK_RECORDS // 100
    elif kill == "mid-chunk":
        kill_while_waiting_on_a_lock(b, path)
        assert checkpoint(b) == (2 * CHUNK_RECORDS, False)  # the third chunk left nothing behind
        assert b.count(PartnerInvitation) == b.count(Subscriber) == 2 * CHUNK_RECORDS // 100

    proc = run_import(b, path)
    output, _ = proc.communicate()
    assert proc.returncode == 0, output
    lines = output.splitlines()
    if kill == "none":
        assert not any("resumed" in line for line in lines)
    else:
        done = CHUNK_RECORDS if kill == "after-commit" else 2 * CHUNK_RECORDS
        assert f"  resumed: the first {done} were imported by an earlier run" in lines
    assert f"  invited: {len(INVITED)}" in lines
    assert "  skipped, duplicate in file: 1" in lines and "  skipped, suppressed here: 1" in lines

    with b.runtime.sessions() as session:
        [log] = session.scalars(select(PartnerImport))
        per_person = Counter(
            session.scalars(
                select(Subscriber.email).join(
                    PartnerInvitation, PartnerInvitation.subscriber_id == Subscriber.id
                )
            )
        )
        outbox = session.scalar(select(func.count()).select_from(OutboxEmail))
    assert {k: log.report[k] for k in EXPECTED} == EXPECTED
    assert (log.applied_records, log.completed_at is not None) == (len(records()), True)
    assert per_person == Counter(INVITED) and outbox == len(INVITED)

    # Invitations committed but never enqueued (the killed run's) are the sweep's; none goes twice.
    b.job(sweep_outbox, older_than=timedelta(0))
    b.work()
    assert sorted(m["To"] for m in smtp_sink.take()) == sorted(INVITED)
    b.job(sweep_outbox, older_than=timedelta(0))
    b.work()
    assert smtp_sink.take() == []

    # A finished import is not resumed: a new run of the file is a new import, and invites nobody.
    again = b.cli("partners", "import", "store-a", str(path))
    assert again.exit_code == 0 and "  invited: 0" in again.output and "resumed" not in again.output
    assert f"  skipped, invited recently: {len(INVITED) + 1}" in again.output, again.output
