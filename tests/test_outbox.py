"""The transactional outbox under real RQ: one live job per row, attempts capped on the row,
permanent refusals given up with their reason."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from rq import SimpleWorker
from rq.job import Job
from sqlalchemy import delete, select

from newsletter.core import clock
from newsletter.mail.transports import NO_SMTPUTF8
from newsletter.models import OutboxEmail
from newsletter.models.outbox import MAX_ATTEMPTS
from newsletter.subscribers.jobs import sweep_outbox
from tests.conftest import _free_port, csrf_token
from tests.sending_helpers import FaultyHandler


@pytest.fixture
def relay():
    """Start an SMTP server on loopback with a FaultyHandler; stopped after the test."""
    started = []

    def start(handler: FaultyHandler, **smtp_options) -> str:
        controller = Controller(handler, hostname="127.0.0.1", port=_free_port(), **smtp_options)
        controller.start()
        started.append(controller)
        return f"smtp://127.0.0.1:{controller.port}"

    yield start
    for controller in started:
        controller.stop()


def sign_up(app, *emails: str) -> None:
    client = app.test_client()
    for email in emails:
        page = client.get("/subscribe").get_data(as_text=True)
        response = client.post(
            "/subscribe", data={"csrf_token": csrf_token(page), "email": email, "topics": ["newsletter"]}
        )
        assert response.status_code == 200


def work(runtime) -> None:
    SimpleWorker([runtime.queue("transactional")], connection=runtime.redis).work(burst=True)


def retries_come_due(runtime) -> None:
    """What RQ's scheduler does once the retry intervals have passed: scheduled jobs go back in the queue."""
    queue = runtime.queue("transactional")
    registry = queue.scheduled_job_registry
    for job in Job.fetch_many(registry.get_jobs_to_schedule(timestamp=2**40), connection=runtime.redis):
        registry.remove(job.id)
        queue.enqueue_job(job)


def jobs_of(runtime) -> dict[str, list[str]]:
    queue = runtime.queue("transactional")
    return {
        "queued": sorted(queue.job_ids),
        "scheduled": sorted(queue.scheduled_job_registry.get_job_ids()),
        "failed": sorted(queue.failed_job_registry.get_job_ids()),
    }


def rows(runtime) -> list[OutboxEmail]:
    with runtime.sessions() as session:
        return list(session.scalars(select(OutboxEmail).order_by(OutboxEmail.id)))


def test_sweeps_add_no_job_for_a_row_that_has_a_live_one(make_app, relay):
    app = make_app(SMTP_URL=relay(FaultyHandler(temporary_rate=2.0)))  # every RCPT: 451
    runtime = app.extensions["newsletter"]
    sign_up(app, "ann@example.com", "bob@example.com", "cy@example.com")
    ids = [f"outbox-{row.id}" for row in rows(runtime)]
    clock.travel(timedelta(minutes=5))

    # Queued: every sweep leaves them to their job.
    assert [sweep_outbox() for _ in range(3)] == [0, 0, 0]
    assert jobs_of(runtime) == {"queued": ids, "scheduled": [], "failed": []}

    # Tried once, refused for now, waiting for RQ's retry: still theirs.
    work(runtime)
    assert jobs_of(runtime) == {"queued": [], "scheduled": ids, "failed": []}
    assert [sweep_outbox() for _ in range(3)] == [0, 0, 0]
    assert jobs_of(runtime) == {"queued": [], "scheduled": ids, "failed": []}
    assert [row.attempts for row in rows(runtime)] == [1, 1, 1]

    # A job Redis lost: the sweep gives the row a new one, once.
    Job.fetch(ids[0], connection=runtime.redis).delete()
    assert sweep_outbox() == 1
    assert [sweep_outbox() for _ in range(3)] == [0, 0, 0]
    assert jobs_of(runtime) == {"queued": ids[:1], "scheduled": ids[1:], "failed": []}


def test_an_unsendable_row_is_tried_at_most_the_cap_and_then_given_up(make_app, relay):
    handler = FaultyHandler(temporary_rate=2.0)  # every RCPT: 451, for ever
    app = make_app(SMTP_URL=relay(handler))
    runtime = app.extensions["newsletter"]
    sign_up(app, "ann@example.com")

    # Retries coming due, workers and sweeps, as many rounds as it takes to settle.
    for _ in range(4 * MAX_ATTEMPTS):
        retries_come_due(runtime)
        work(runtime)
        swept = sweep_outbox(older_than=timedelta(0))
        if not swept and not any(jobs_of(runtime)[state] for state in ("queued", "scheduled")):
            break
    assert handler.faults["451"] == MAX_ATTEMPTS == 10
    [row] = rows(runtime)
    assert row.attempts == MAX_ATTEMPTS and row.sent_at is None and row.failed_at is not None
    assert row.last_error.startswith("gave up after 10 attempts: recipient refused: 451")
    assert sweep_outbox(older_than=timedelta(0)) == 0
    assert jobs_of(runtime)["queued"] == jobs_of(runtime)["scheduled"] == []


def test_relay_without_smtputf8_fails_a_non_ascii_address_once_with_the_reason(make_app, relay):
    handler = FaultyHandler()
    app = make_app(SMTP_URL=relay(handler, enable_SMTPUTF8=False))
    runtime = app.extensions["newsletter"]
    sign_up(app, "jörg@example.com", "ann@example.com")
    work(runtime)

    jorg, ann = rows(runtime)
    assert jorg.failed_at is not None and jorg.sent_at is None and jorg.attempts == 1
    assert jorg.last_error == NO_SMTPUTF8
    assert ann.sent_at is not None  # the next recipient is not held up
    assert [rcpt for rcpt, _ in handler.accepted] == ["ann@example.com"]
    assert jobs_of(runtime) == {"queued": [], "scheduled": [], "failed": []}  # no retry
    assert sweep_outbox(older_than=timedelta(0)) == 0


def test_the_worker_logs_a_refused_message_in_one_line(make_app, relay, database_url, tmp_path):
    handler = FaultyHandler(refuse={"gone@example.com"})
    app = make_app(SMTP_URL=relay(handler))
    runtime = app.extensions["newsletter"]
    sign_up(app, "gone@example.com")
    env = {
        **os.environ,
        "NEWSLETTER_INSTANCE_PATH": str(tmp_path),
        "NEWSLETTER_SECRET_KEY": app.settings.secret_key,
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_REDIS_URL": app.settings.redis_url,
        "NEWSLETTER_SMTP_URL": app.settings.smtp_url,
    }
    newsletter = Path(sys.executable).with_name("newsletter")
    done = subprocess.run(
        [newsletter, "worker", "--burst", "--queue", "transactional"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    [row] = rows(runtime)
    refused = [line for line in done.stderr.splitlines() if "failed:" in line]
    assert len(refused) == 1 and "WARNING" in refused[0], done.stderr
    assert refused[0].endswith(
        f"outbox {row.id} (confirm) failed: recipient refused: 550 5.1.1 no such mailbox"
    )
    assert row.failed_at is not None and row.attempts == 1 and handler.faults["550"] == 1


def test_invitations_in_a_live_batch_job_are_left_to_it(runtime, make_subscriber, smtp_sink):
    from newsletter.models import OutboxKind
    from newsletter.partners.invitations import enqueue_invitations

    people = [make_subscriber(f"p{i}@example.com") for i in range(3)]
    with runtime.sessions() as session:
        outbox = [OutboxEmail(kind=OutboxKind.PARTNER_INVITE, subscriber_id=p.id) for p in people]
        session.add_all(outbox)
        session.commit()
        ids = [row.id for row in outbox]
    enqueue_invitations(runtime, ids)
    batch = f"outbox-invitations-{ids[0]}"
    clock.travel(timedelta(minutes=5))
    assert [sweep_outbox() for _ in range(3)] == [0, 0, 0]
    assert jobs_of(runtime)["queued"] == [batch]

    # The batch job is lost (Redis flushed): each row gets its own job, once.
    Job.fetch(batch, connection=runtime.redis).delete()
    assert sweep_outbox() == 3 and sweep_outbox() == 0
    assert jobs_of(runtime)["queued"] == sorted(f"outbox-{i}" for i in ids)
    assert [row.job_id for row in rows(runtime)] == [None, None, None]
    work(runtime)
    assert sorted(m["To"] for m in smtp_sink.take()) == [p.email for p in people]


def test_a_row_id_used_again_gets_a_job_of_its_own(make_app, smtp_sink):
    app = make_app()
    runtime = app.extensions["newsletter"]
    sign_up(app, "ann@example.com")
    work(runtime)  # sent; RQ keeps the finished job outbox-1 for a while
    assert len(smtp_sink.take()) == 1
    with runtime.sessions() as session:
        session.execute(delete(OutboxEmail))  # as erasure does; SQLite hands out id 1 again
        session.commit()
    sign_up(app, "bob@example.com")
    work(runtime)
    [mail] = smtp_sink.take()
    assert mail["To"] == "bob@example.com"
