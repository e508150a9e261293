"""Double opt-in signup end to end: HTTP form, real Redis + RQ, real SMTP, SQLite and PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from newsletter.core import clock
from newsletter.models import ConsentEvent, OutboxEmail, Subscriber
from newsletter.subscribers.tokens import Purpose, make_token
from tests.conftest import confirm_link, csrf_token


def count(runtime, model) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def subscriber(runtime, email: str) -> Subscriber | None:
    with runtime.sessions() as session:
        sub = session.scalar(select(Subscriber).where(Subscriber.email == email))
        if sub is not None:
            _ = [(s.status, s.topic.slug) for s in sub.subscriptions]
        return sub


def ledger(runtime, subscriber_id: int) -> list[ConsentEvent]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(ConsentEvent)
                .where(ConsentEvent.subscriber_id == subscriber_id)
                .order_by(ConsentEvent.id)
            )
        )


def path_of(link: str) -> str:
    return urlsplit(link).path


def test_signup_sends_one_confirmation_which_confirms_only_on_post(client, signup, runtime, work, smtp_sink):
    response = signup("Ann@Example.com", topics=["newsletter", "early-access"], first_name="Ann")
    assert response.status_code == 200
    assert "Check your inbox" in response.get_data(as_text=True)
    assert smtp_sink.pending() == 0  # nothing is sent in the request: the worker sends

    work()
    [mail] = smtp_sink.take()
    assert mail["To"] == "Ann@example.com"
    assert "confirm" in mail["Subject"].lower()
    link = confirm_link(mail)
    assert link.startswith("https://newsletter.test/confirm/")
    assert link in mail.get_body(("html",)).get_content()

    # A link scanner's GET changes nothing.
    page = client.get(path_of(link))
    assert page.status_code == 200
    assert subscriber(runtime, "Ann@example.com").status == "pending"

    confirmed = client.post(
        path_of(link),
        data={"csrf_token": csrf_token(page.get_data(as_text=True))},
        environ_base={"REMOTE_ADDR": "198.51.100.9"},
        headers={"User-Agent": "Mail client browser"},
    )
    assert confirmed.status_code == 200
    assert "You are subscribed" in confirmed.get_data(as_text=True)
    sub = subscriber(runtime, "Ann@example.com")
    assert sub.status == "active" and sub.first_name == "Ann"
    assert {s.topic.slug: s.status for s in sub.subscriptions} == {
        "newsletter": "active",
        "early-access": "active",
    }

    events = ledger(runtime, sub.id)
    assert [e.action for e in events] == ["signup_requested", "confirmed"]
    request_event, confirm_event = events
    assert request_event.ip == "203.0.113.7" and request_event.user_agent == "pytest-browser/1.0"
    assert request_event.source == "web:subscribe" and request_event.topics == ["early-access", "newsletter"]
    assert request_event.wording_version and len(request_event.wording_hash) == 64
    assert confirm_event.ip == "198.51.100.9" and confirm_event.user_agent == "Mail client browser"

    work()
    [welcome] = smtp_sink.take()  # the welcome after the confirmation (tests/test_welcome.py)
    assert "Welcome" in welcome["Subject"]

    # A replay changes nothing and adds nothing to the ledger.
    again = client.post(path_of(link), data={"csrf_token": csrf_token(page.get_data(as_text=True))})
    assert again.status_code == 200
    assert len(ledger(runtime, sub.id)) == 2
    work()
    assert smtp_sink.take() == []


def test_same_answer_for_new_pending_and_active_addresses(client, signup, runtime, work, smtp_sink):
    first = signup("bob@example.com").get_data(as_text=True)
    pending = signup("bob@example.com").get_data(as_text=True)
    work()
    mails = smtp_sink.take()
    assert [m["To"] for m in mails] == ["bob@example.com", "bob@example.com"]
    page = client.get(path_of(confirm_link(mails[0])))
    client.post(path_of(confirm_link(mails[0])), data={"csrf_token": csrf_token(page.get_data(as_text=True))})
    active = signup("bob@example.com").get_data(as_text=True)

    def same(page: str) -> str:  # every response has its own CSP nonce, whoever asks
        return re.sub(r'nonce="[^"]+"', 'nonce=""', page)

    assert same(first) == same(pending) == same(active)
    work()
    welcome, notice = sorted(smtp_sink.take(), key=lambda m: "already subscribed" in m["Subject"])
    assert "Welcome" in welcome["Subject"]
    assert "already subscribed" in notice["Subject"]
    assert "/confirm/" not in notice.get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    "address",
    [
        "not-an-address",
        "ann@",
        "@example.com",
        "ann@example..com",
        "a" * 65 + "@example.com",
        "x@" + "a" * 250 + ".com",
        "ann@exa mple.com",
        "ann\n@example.com",
        "",
        "ann@example.com\r\nBcc: x@y.z",
    ],
)
def test_malformed_and_oversized_addresses_get_a_clear_answer(signup, runtime, address):
    response = signup(address)
    assert response.status_code == 400
    assert 'role="alert"' in response.get_data(as_text=True)
    assert count(runtime, Subscriber) == 0


def test_idn_address_is_normalised(signup, runtime, work, smtp_sink):
    assert signup("Jürgen@Bücher.example").status_code == 200
    work()
    [mail] = smtp_sink.take()
    assert subscriber(runtime, "Jürgen@bücher.example") is not None
    assert "bücher.example" in str(mail["To"]) or "xn--bcher-kva.example" in str(mail["To"])


def test_header_injection_in_first_name_is_refused(signup, runtime, smtp_sink):
    response = signup("eve@example.com", first_name="Eve\r\nBcc: everyone@example.com")
    assert response.status_code == 400
    assert count(runtime, Subscriber) == 0


def test_first_name_with_encoded_newline_does_not_reach_a_header(signup, runtime, work, smtp_sink):
    # The first name is only used in bodies; still, it must never produce a broken message.
    assert signup("eve@example.com", first_name="=?UTF-8?Q?=0A?=Eve").status_code == 200
    work()
    [mail] = smtp_sink.take()
    assert mail["To"] == "eve@example.com" and mail["Bcc"] is None


def test_missing_csrf_token_is_a_friendly_400(client, runtime):
    response = client.post("/subscribe", data={"email": "ann@example.com", "topics": ["newsletter"]})
    assert response.status_code == 400
    assert "reload the page" in response.get_data(as_text=True)
    assert count(runtime, Subscriber) == 0


@pytest.mark.parametrize("redis_state", ["up", "down"])
def test_a_new_address_has_the_same_rows_on_both_databases(make_app, redis_state):
    """PostgreSQL writes a new address's rows in one SQL statement (signup._new_signup_statement;
    with Redis down, after the subscriber's own INSERT), SQLite in four Core ones: the columns come
    out the same, the model's defaults included."""
    from newsletter.mail.addresses import mailbox_hash
    from newsletter.models import Frequency
    from newsletter.subscribers.wording import signup_wording

    app = make_app(**({"REDIS_URL": "redis://127.0.0.1:1/0"} if redis_state == "down" else {}))
    runtime, client = app.extensions["newsletter"], app.test_client()
    page = client.get("/subscribe").get_data(as_text=True)
    data = {"csrf_token": csrf_token(page), "email": "Ann.Lee+news@Example.com", "first_name": " Ann "}
    response = client.post(
        "/subscribe",
        data={**data, "topics": ["newsletter", "early-access"]},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
        headers={"User-Agent": "pytest-browser/1.0"},
    )
    assert response.status_code == 200
    sub = subscriber(runtime, "Ann.Lee+news@example.com")
    assert (sub.status, sub.first_name, sub.frequency) == ("pending", "Ann", Frequency.ANY)
    assert sub.time_zone == "UTC"
    assert sub.created_at is not None and sub.confirmed_at is None and sub.language == "en"
    assert sorted((s.topic.slug, s.status) for s in sub.subscriptions) == [
        ("early-access", "pending"),
        ("newsletter", "pending"),
    ]
    [event] = ledger(runtime, sub.id)
    wording = signup_wording(app.settings, "en")
    assert (event.action, event.topics, event.details) == (
        "signup_requested",
        ["early-access", "newsletter"],
        {"email": "confirm"},
    )
    assert (event.ip, event.user_agent) == ("203.0.113.7", "pytest-browser/1.0")
    assert event.source == "web:subscribe"
    assert (event.wording_version, event.wording_hash) == (wording.version, wording.sha256)
    with runtime.sessions() as session:
        [outbox] = session.scalars(select(OutboxEmail))
        assert (outbox.kind, outbox.subscriber_id, outbox.request_event_id, outbox.attempts) == (
            "confirm",
            sub.id,
            event.id,
            0,
        )
        assert outbox.mailbox_hash == mailbox_hash("ann.lee@example.com") and outbox.created_at is not None


def test_no_topic_chosen(signup, runtime):
    response = signup("ann@example.com", topics=[])
    assert response.status_code == 400
    assert "at least one topic" in response.get_data(as_text=True)


def test_honeypot_gets_the_normal_answer_and_is_dropped(signup, runtime, work, smtp_sink):
    response = signup("bot@example.com", website="http://spam.example")
    assert response.status_code == 200 and "Check your inbox" in response.get_data(as_text=True)
    work()
    assert count(runtime, Subscriber) == 0


@pytest.mark.parametrize("kind", ["tampered", "wrong-purpose", "garbage", "unknown-subscriber"])
def test_bad_tokens_get_a_friendly_page(client, signup, app, runtime, work, smtp_sink, kind):
    signup("ann@example.com")
    work()
    link = path_of(confirm_link(smtp_sink.take()[0]))
    token = link.rsplit("/", 1)[1]
    bad = {
        "tampered": token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"),
        "wrong-purpose": _other_purpose_token(app.settings),
        "garbage": "%00%ff<script>",
        "unknown-subscriber": make_token(app.settings, Purpose.CONFIRM, {"s": 999, "h": "0" * 16}),
    }[kind]
    form_token = csrf_token(client.get("/subscribe").get_data(as_text=True))
    for response in (
        client.get(f"/confirm/{bad}"),
        client.post(f"/confirm/{bad}", data={"csrf_token": form_token}),
    ):
        assert response.status_code == 400
        assert "This link does not work" in response.get_data(as_text=True)
    assert subscriber(runtime, "ann@example.com").status == "pending"


def _other_purpose_token(settings) -> str:
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(settings.secret_key, salt="newsletter.unsubscribe").dumps({"s": 1})


def test_expired_link_offers_a_new_one(client, signup, runtime, work, smtp_sink):
    signup("ann@example.com")
    work()
    link = path_of(confirm_link(smtp_sink.take()[0]))
    clock.travel(timedelta(days=8))
    page = client.get(link)
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert "This link has expired" in html
    assert client.post(link, data={"csrf_token": csrf_token(html)}).status_code == 400
    assert subscriber(runtime, "ann@example.com").status == "pending"
    resent = client.post(f"{link}/resend", data={"csrf_token": csrf_token(html)})
    assert resent.status_code == 200
    work()
    [fresh] = smtp_sink.take()
    assert confirm_link(fresh) != f"https://newsletter.test{link}"


def test_links_signed_with_a_rotated_out_key_still_work(make_app, redis_conn, smtp_sink):
    old = make_app(SECRET_KEY="old-key")
    old_client = old.test_client()
    page = old_client.get("/subscribe").get_data(as_text=True)
    old_client.post(
        "/subscribe",
        data={"csrf_token": csrf_token(page), "email": "ann@example.com", "topics": ["newsletter"]},
    )
    from rq import SimpleWorker

    rt = old.extensions["newsletter"]
    SimpleWorker([rt.queue("transactional")], connection=rt.redis).work(burst=True)
    link = path_of(confirm_link(smtp_sink.take()[0]))

    new = make_app(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    client = new.test_client()
    page = client.get(link)
    assert page.status_code == 200
    done = client.post(link, data={"csrf_token": csrf_token(page.get_data(as_text=True))})
    assert "You are subscribed" in done.get_data(as_text=True)

    without = make_app(SECRET_KEY="new-key").test_client()
    assert without.get(link).status_code == 400


def test_one_thousand_rapid_signups_from_one_ip(client, runtime, work, smtp_sink):
    page = client.get("/subscribe").get_data(as_text=True)
    token = csrf_token(page)
    statuses = []
    for i in range(1000):
        response = client.post(
            "/subscribe",
            data={"csrf_token": token, "email": f"victim{i}@example.com", "topics": ["newsletter"]},
            environ_base={"REMOTE_ADDR": "192.0.2.66"},
        )
        statuses.append(response.status_code)
    limit = runtime.settings.signup_rate_limit[0]
    assert statuses.count(200) == limit
    assert statuses.count(429) == 1000 - limit
    assert count(runtime, Subscriber) == limit
    work()
    assert len(smtp_sink.take()) == limit
    # another network is not affected
    other = client.post(
        "/subscribe",
        data={"csrf_token": token, "email": "fine@example.com", "topics": ["newsletter"]},
        environ_base={"REMOTE_ADDR": "192.0.2.1"},
    )
    assert other.status_code == 200
    work()
    assert len(smtp_sink.take()) == 1


def test_twenty_signups_of_one_address_from_twenty_ips(signup, runtime, work, smtp_sink):
    for i in range(20):
        response = signup("target@example.com", ip=f"198.51.100.{i + 1}")
        assert response.status_code == 200
        assert "Check your inbox" in response.get_data(as_text=True)
    work()
    assert len(smtp_sink.take()) == runtime.settings.confirmations_per_address == 3
    assert count(runtime, OutboxEmail) == 3
    assert count(runtime, Subscriber) == 1


def test_signup_is_not_lost_when_redis_is_down(make_app, smtp_sink, redis_conn, database_url):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens there
    client = app.test_client()
    page = client.get("/subscribe").get_data(as_text=True)
    response = client.post(
        "/subscribe",
        data={"csrf_token": csrf_token(page), "email": "ann@example.com", "topics": ["newsletter"]},
    )
    assert response.status_code == 200
    assert count(app.extensions["newsletter"], OutboxEmail) == 1
    assert smtp_sink.pending() == 0

    # Redis is back: a worker's sweep finds the unsent confirmation and sends it.
    healthy = make_app()
    from newsletter.subscribers.jobs import sweep_outbox

    clock.travel(timedelta(minutes=1))
    assert sweep_outbox() == 1
    rt = healthy.extensions["newsletter"]
    from rq import SimpleWorker

    SimpleWorker([rt.queue("transactional")], connection=rt.redis).work(burst=True)
    [mail] = smtp_sink.take()
    assert mail["To"] == "ann@example.com"
    assert sweep_outbox() == 0  # sent once, never again


def test_confirmation_job_is_idempotent(signup, runtime, smtp_sink):
    from newsletter.subscribers.jobs import deliver_transactional

    signup("ann@example.com")
    with runtime.sessions() as session:
        outbox_id = session.scalar(select(OutboxEmail.id))
    assert deliver_transactional(outbox_id) is not None
    assert deliver_transactional(outbox_id) is None  # a retried or duplicated job sends nothing
    runtime.queue("transactional").empty()
    assert len(smtp_sink.take()) == 1


def test_smtp_failure_leaves_the_email_for_a_retry(make_app, smtp_sink, redis_conn):
    from newsletter.mail.transports import TransportError
    from newsletter.subscribers.jobs import deliver_transactional

    app = make_app(SMTP_URL="smtp://127.0.0.1:1")
    client = app.test_client()
    page = client.get("/subscribe").get_data(as_text=True)
    client.post(
        "/subscribe",
        data={"csrf_token": csrf_token(page), "email": "ann@example.com", "topics": ["newsletter"]},
    )
    rt = app.extensions["newsletter"]
    rt.queue("transactional").empty()
    with rt.sessions() as session:
        outbox_id = session.scalar(select(OutboxEmail.id))
    with pytest.raises(TransportError):
        deliver_transactional(outbox_id)
    with rt.sessions() as session:
        row = session.get(OutboxEmail, outbox_id)
        assert row.sent_at is None and row.claimed_at is None and "cannot connect" in row.last_error
    rt.settings = replace(rt.settings, smtp_url=smtp_sink.url)  # the relay is back
    assert deliver_transactional(outbox_id)
    assert len(smtp_sink.take()) == 1


def test_no_500_on_odd_requests(client):
    for path in ["/confirm/", "/confirm/x/resend", "/subscribe?x=%ff", "/nope"]:
        assert client.get(path).status_code in (200, 404, 405)
    huge = client.post("/subscribe", data={"email": "a" * 2_000_000})
    assert huge.status_code in (400, 413)


def test_pages_name_the_store_and_its_postal_address(make_app):
    """The signup page and a friendly error page both look like the store: its name and address."""
    app = make_app(STORE_NAME="Teapot & Co", POSTAL_ADDRESS="1 Kettle Lane, Leeds")
    client = app.test_client()
    page = client.get("/subscribe").get_data(as_text=True)
    assert "<title>Subscribe · Teapot &amp; Co</title>" in page and "Hear from Teapot &amp; Co" in page
    assert "Teapot &amp; Co · 1 Kettle Lane, Leeds" in page  # the footer
    missing = client.get("/no-such-page")
    assert missing.status_code == 404 and "Teapot &amp; Co · 1 Kettle Lane, Leeds" in missing.get_data(
        as_text=True
    )
