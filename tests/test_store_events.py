"""Store events over HTTP and the CLI: one email each through the transactional outbox, never twice."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from rq import SimpleWorker
from rq.job import Job
from sqlalchemy import func, select

from newsletter.campaigns import caps
from newsletter.campaigns.jobs import tick
from newsletter.cli import cli
from newsletter.core import clock
from newsletter.core.runtime import CAMPAIGNS, QUEUES
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.mail import verp
from newsletter.models import (
    OutboxEmail,
    SignalKind,
    StoreEvent,
    Subscriber,
    Suppression,
    SuppressionReason,
)
from newsletter.models.subscribers import address_hash
from newsletter.subscribers.jobs import send_transactional_many, sweep_outbox
from tests.conftest import _free_port, jobs_use
from tests.sending_helpers import now_floor, write_campaign
from tests.test_cli import env_for
from tests.test_sending import schedule

TOKEN = "store-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

DELAYED = {
    "event_id": "evt-2",
    "kind": "order_delayed",
    "email": "ann@example.com",
    "first_name": "Ann",
    "order_id": "A-1001",
    "new_date": "2026-12-14",
    "reason": "the supplier's lorry broke down",
}


@pytest.fixture
def api(make_app):
    app = make_app(API_TOKEN=TOKEN, STORE_NAME="Bramble Books", FROM="Bramble <help@bramble.example>")
    return app.test_client()


def post(api, body, headers=AUTH):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return api.post("/api/events", data=data, headers={**headers, "Content-Type": "application/json"})


def count(runtime, model) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count(model.id)))


def runtime_of(api):
    return api.application.extensions["newsletter"]


def text_of(mail) -> str:
    return mail.get_body(("plain",)).get_content()


EVERY_KIND = [
    ({"kind": "order_placed", "order_id": "A-1"}, ["Thank you for your order A-1", "help@bramble.example"]),
    (
        {"kind": "order_shipped", "order_id": "A-2", "tracking_url": "https://t.example/2"},
        ["https://t.example/2"],
    ),
    (
        {
            "kind": "order_delayed",
            "order_id": "A-3",
            "new_date": "2026-12-14",
            "reason": "a lorry broke down",
        },
        ["2026-12-14", "a lorry broke down", "cancel"],
    ),
    ({"kind": "order_cancelled", "order_id": "A-4", "reason": "you asked"}, ["is cancelled", "you asked"]),
    (
        {
            "kind": "item_out_of_stock",
            "order_id": "A-5",
            "item": "Blue teapot",
            "alternatives": [
                {"name": "Green teapot", "url": "https://shop.example/green"},
                {"name": "Red pot"},
            ],
        },
        ["sorry", "Blue teapot", "Green teapot: https://shop.example/green", "- Red pot"],
    ),
    (
        {"kind": "back_in_stock", "item": "Blue teapot", "url": "https://shop.example/blue"},
        ["back in stock", "https://shop.example/blue"],
    ),
]


@pytest.mark.parametrize(("fields", "says"), EVERY_KIND, ids=[f["kind"] for f, _ in EVERY_KIND])
def test_each_kind_mails_the_customer_once_with_its_details(api, work, smtp_sink, fields, says):
    event = {"event_id": "evt-1", "email": "Cid@Example.com", "first_name": "Cid", **fields}
    response = post(api, event)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"event_id": "evt-1", "kind": fields["kind"], "status": "queued"}
    assert smtp_sink.pending() == 0  # sent by the worker, after the commit
    work()
    [mail] = smtp_sink.take()
    assert mail["To"] == "Cid@example.com"
    body = text_of(mail)
    for words in says:
        assert words.lower() in (mail["Subject"] + body).lower(), words
    assert "Hello Cid," in body and "unsubscribe" not in body.lower()
    with runtime_of(api).sessions() as session:  # not made a subscriber
        assert session.scalar(select(func.count(Subscriber.id))) == 0


def test_a_retried_event_is_answered_the_same_and_sends_nothing_more(api, work, smtp_sink):
    first = post(api, DELAYED)
    work()
    [mail] = smtp_sink.take()
    assert "the supplier's lorry broke down" in text_of(mail)
    again = post(api, DELAYED)
    assert again.status_code == 200 and again.get_json() == first.get_json()
    in_a_batch = post(api, [DELAYED, {**DELAYED, "event_id": "evt-3"}, {**DELAYED, "event_id": "evt-3"}])
    assert in_a_batch.get_json()["results"][0] == first.get_json()
    work()
    assert len(smtp_sink.take()) == 1  # only evt-3, once
    assert count(runtime_of(api), OutboxEmail) == 2


def test_a_batch_is_one_job_per_email_enqueued_together_and_a_taken_job_id_is_left_alone(
    api, work, smtp_sink
):
    runtime = runtime_of(api)
    queue = runtime.queue("transactional")
    batch = [{**DELAYED, "event_id": f"b-{n}", "email": f"b{n}@example.com"} for n in range(3)]
    assert post(api, batch).status_code == 200
    with runtime.sessions() as session:
        ids = list(session.scalars(select(OutboxEmail.id).order_by(OutboxEmail.id)))
    assert sorted(queue.job_ids) == sorted(f"outbox-{i}" for i in ids)
    # Redis lost one job; handing the rows over again adds that one and leaves the live ones alone.
    Job.fetch(f"outbox-{ids[1]}", connection=runtime.redis).delete()
    send_transactional_many(runtime, ids)
    assert sorted(queue.job_ids) == sorted(f"outbox-{i}" for i in ids)
    work()
    assert sorted(mail["To"] for mail in smtp_sink.take()) == [f"b{n}@example.com" for n in range(3)]


def test_a_batch_posted_while_redis_is_down_is_answered_and_sent_by_the_sweep(make_app, work, smtp_sink):
    down = make_app(API_TOKEN=TOKEN, REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0").test_client()
    api = make_app(API_TOKEN=TOKEN).test_client()  # the same database; Redis up (built last: `work` uses it)
    batch = [{**DELAYED, "event_id": f"d-{n}", "email": f"d{n}@example.com"} for n in range(3)]
    response = post(down, batch)
    assert response.status_code == 200
    assert [r["status"] for r in response.get_json()["results"]] == ["queued"] * 3
    runtime = jobs_use(runtime_of(api))
    assert runtime.queue("transactional").job_ids == []
    assert sweep_outbox(older_than=timedelta(0)) == 3
    assert sweep_outbox(older_than=timedelta(0)) == 0  # each row has its job now
    work()
    assert sorted(mail["To"] for mail in smtp_sink.take()) == [f"d{n}@example.com" for n in range(3)]
    assert post(api, batch).get_json() == response.get_json()  # retried: answered the same
    work()
    assert smtp_sink.take() == []


def test_back_in_stock_request_is_recorded_with_its_evidence_and_mails_nothing(api, work, smtp_sink):
    evidence = {"ip": "203.0.113.9", "user_agent": "Firefox", "source": "product page", "wording": "Tell me"}
    request = {"event_id": "r-1", "kind": "back_in_stock_request", "email": "dan@example.com", "item": "Pot"}
    assert post(api, request).get_json()["problems"] == ["events[0].evidence: required"]
    response = post(api, {**request, "evidence": evidence})
    assert response.get_json()["status"] == "recorded"
    work()
    with runtime_of(api).sessions() as session:
        row = session.scalar(select(StoreEvent))
        assert row.payload["evidence"] == evidence and row.email == "dan@example.com"
        assert session.scalar(select(func.count(OutboxEmail.id))) == 0


def test_jsonl_batch_and_a_batch_with_one_bad_event_applies_nothing(api, work, smtp_sink):
    good = {**DELAYED, "event_id": "b-1"}
    bad = {**DELAYED, "event_id": "b-2"}
    del bad["new_date"]
    response = post(api, "\n".join(json.dumps(e) for e in [good, good | {"event_id": "b-0"}, bad]))
    assert response.status_code == 400
    assert response.get_json()["problems"] == ["events[2].new_date: required"]
    assert count(runtime_of(api), StoreEvent) == 0 and count(runtime_of(api), OutboxEmail) == 0
    lines = "\n".join(json.dumps(e) for e in [good, good | {"event_id": "b-0"}]) + "\n"
    assert [r["status"] for r in post(api, lines).get_json()["results"]] == ["queued", "queued"]
    work()
    assert len(smtp_sink.take()) == 2


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({**DELAYED, "kind": "order_lost"}, "events[0].kind: 'order_lost' is not one of"),
        ({**DELAYED, "kind": ["order_placed"]}, "events[0].kind: ['order_placed'] is not one of"),
        ({**DELAYED, "new_date": "next week"}, "events[0].new_date: 'next week' does not match"),
        ({k: v for k, v in DELAYED.items() if k != "event_id"}, "events[0].event_id: required"),
        ({**DELAYED, "email": "not-an-address"}, "events[0].email: "),
        ([DELAYED, 7], "events[1]: 7 is not of type 'object'"),
        ("{not json", "line 1: not JSON"),
        ("42", "the body must be a JSON object"),
    ],
)
def test_malformed_events_get_a_400_naming_the_field(api, body, problem):
    response = post(api, body)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(problem), response.get_json()


def test_tokens_and_sizes(api, make_app):
    assert post(api, DELAYED, headers={}).status_code == 401
    assert post(api, DELAYED, headers={"Authorization": "Bearer wrong-token"}).status_code == 403
    assert post(api, b"[" + b" " * (1024 * 1024 + 1) + b"]").status_code == 413
    too_many = [{**DELAYED, "event_id": f"e{n}"} for n in range(1001)]
    response = post(api, too_many)
    assert response.status_code == 413 and "at most 1000 events" in response.get_json()["error"]
    assert count(runtime_of(api), StoreEvent) == 0


def test_never_to_a_bounced_or_complaining_address_but_whatever_the_marketing_choice(api, work, smtp_sink):
    runtime = runtime_of(api)
    with runtime.sessions() as session:
        for email, reason in [
            ("bounced@example.com", SuppressionReason.BOUNCED),
            ("spam@example.com", SuppressionReason.COMPLAINED),
            ("left@example.com", SuppressionReason.UNSUBSCRIBED),
        ]:
            session.add(Suppression(email_hash=address_hash(email), reason=reason))
        session.commit()
    events = [
        {**DELAYED, "event_id": email, "email": email}
        for email in ["bounced@example.com", "spam@example.com", "left@example.com"]
    ]
    results = post(api, events).get_json()["results"]
    assert [r["status"] for r in results] == ["suppressed", "suppressed", "queued"]
    work()
    [mail] = smtp_sink.take()
    assert mail["To"] == "left@example.com"  # an unsubscribe stops marketing, not order mail


def test_a_capped_subscriber_still_gets_order_mail_and_it_does_not_count(api, work, smtp_sink):
    runtime = runtime_of(api)
    with runtime.sessions() as session:
        ann = Subscriber(email="ann@example.com", email_hash=address_hash("ann@example.com"), status="active")
        session.add(ann)
        session.commit()
        sid = ann.id
    rules = list(runtime.settings.marketing_caps)
    runtime.redis.delete(caps.key_for(sid))
    caps.reserve_batch(runtime.redis, clock.now(), [(sid, "m-1", rules)])
    [held] = caps.reserve_batch(runtime.redis, clock.now(), [(sid, "m-2", rules)])
    assert held is not None and held > clock.now()  # capped: the next marketing email must wait
    before = runtime.redis.zcard(caps.key_for(sid))
    post(api, DELAYED)
    work()
    [mail] = smtp_sink.take()
    assert mail["To"] == "ann@example.com"
    assert runtime.redis.zcard(caps.key_for(sid)) == before
    runtime.redis.delete(caps.key_for(sid))


def test_cli_sends_a_jsonl_file_all_or_nothing(api, work, smtp_sink, tmp_path):
    app = api.application
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(json.dumps(DELAYED) + "\n" + json.dumps({**DELAYED, "event_id": "c-2"}) + "\n")
    bad.write_text(json.dumps({**DELAYED, "event_id": "c-3", "reason": ""}) + "\n")
    result = CliRunner().invoke(cli, ["events", "send", str(bad)], env=env_for(app))
    assert result.exit_code == 1 and "events[0].reason: '' should be non-empty" in result.output
    result = CliRunner().invoke(cli, ["events", "send", str(good)], env=env_for(app))
    assert result.exit_code == 0, result.output
    assert result.output.count('"status": "queued"') == 2
    work()
    assert len(smtp_sink.take()) == 2


@pytest.mark.parametrize("kind", [SignalKind.BOUNCE_HARD, SignalKind.COMPLAINT])
def test_a_bounce_or_complaint_of_store_mail_suppresses_its_address(make_app, work, smtp_sink, kind):
    app = make_app(API_TOKEN=TOKEN, BOUNCE_ADDRESS="bounces@store.example")
    runtime = app.extensions["newsletter"]
    post(app.test_client(), DELAYED)
    work()
    [(sender, _rcpts, _message)] = smtp_sink.take_envelopes()
    with runtime.sessions() as session:
        done = record(
            session, runtime.settings, Signal(kind, "smtp", verp=verp.read(runtime.settings, sender))
        )
        session.commit()
        assert done.suppressed in (SuppressionReason.BOUNCED, SuppressionReason.COMPLAINED)
    again = post(app.test_client(), {**DELAYED, "event_id": "evt-later"})
    assert again.get_json()["status"] == "suppressed"


def test_erasing_a_subscriber_erases_the_store_events_about_their_address(api, work, smtp_sink):
    from newsletter.subscribers.consent import RequestInfo
    from newsletter.subscribers.data_rights import erase

    runtime = runtime_of(api)
    post(api, [DELAYED, {**DELAYED, "event_id": "other", "email": "bob@example.com"}])
    work()
    assert len(smtp_sink.take()) == 2
    with runtime.sessions() as session:
        ann = Subscriber(email="Ann@example.com", email_hash=address_hash("ann@example.com"), status="active")
        session.add(ann)
        session.flush()
        erase(session, ann, RequestInfo(ip=None, user_agent=None, source="cli"))
        session.commit()
        assert session.scalars(select(StoreEvent.email)).all() == ["bob@example.com"]
        assert session.scalar(select(func.count(OutboxEmail.id))) == 1


def test_store_mail_files_carry_no_marketing(api, tmp_path, monkeypatch):
    from newsletter.mail import templates
    from newsletter.store_events.check import problems

    settings = api.application.settings
    assert problems(settings) == []
    result = CliRunner().invoke(cli, ["events", "check"], env=env_for(api.application))
    assert result.exit_code == 0 and "no marketing content" in result.output
    # An edited thank-you that sneaks in an early-access link and a sale is refused, by file.
    edited = tmp_path / "email"
    edited.mkdir()
    for path in (templates.TEMPLATES / "email").iterdir():
        (edited / path.name).write_text(path.read_text())
    thanks = edited / "order_placed.txt"
    thanks.write_text(thanks.read_text() + "\nOur winter sale: https://x.example/early-access/abc\n")
    monkeypatch.setattr(templates, "TEMPLATES", tmp_path)
    templates.email_environment.cache_clear()
    try:
        found = problems(settings)
    finally:
        monkeypatch.undo()
        templates.email_environment.cache_clear()
    line = thanks.read_text().count("\n")  # the added line is the last one
    assert found == [
        f"templates/email/order_placed.txt:{line}:12: marketing in store mail: 'sale'",
        f"templates/email/order_placed.txt:{line}:35: marketing in store mail: '/early-access/'",
    ]


@pytest.mark.parametrize("posted_at", ["before the worker starts", "while the first batch is sending"])
def test_store_mail_goes_ahead_of_a_campaigns_queued_batches(
    make_app, make_subscriber, smtp_sink, tmp_path, posted_at
):
    """One worker serving both queues: the order email comes before every batch not yet started."""
    app = make_app(API_TOKEN=TOKEN, MARKETING_CAPS="", QUIET_HOURS="", BATCH_SIZE="2")
    runtime = jobs_use(app.extensions["newsletter"])
    for n in range(6):
        make_subscriber(f"f{n}@example.com", topics=("newsletter",))
    schedule(
        runtime,
        write_campaign(tmp_path, slug="news", topic="newsletter", waves=[("all", "all", now_floor())]),
    )
    tick()
    assert runtime.queue(CAMPAIGNS).count == 3  # three batches of two, queued
    store = app.test_client()
    answers = []
    if posted_at == "before the worker starts":
        answers.append(post(store, DELAYED).status_code)

    class Worker(SimpleWorker):
        def execute_job(self, job, queue):
            if queue.name == CAMPAIGNS and not answers:  # the first batch is starting
                answers.append(post(store, DELAYED).status_code)
            return super().execute_job(job, queue)

    Worker([runtime.queue(name) for name in QUEUES], connection=runtime.redis).work(burst=True)
    order = [str(mail["To"]) for mail in smtp_sink.take()]
    assert answers == [200]
    assert sorted(order) == sorted(["ann@example.com"] + [f"f{n}@example.com" for n in range(6)])
    before = 0 if posted_at == "before the worker starts" else 2  # at most the batch in progress
    assert order.index("ann@example.com") == before
