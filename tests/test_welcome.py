"""The welcome email after a confirmation: once per person, in the confirm transaction, real parts."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

from rq import SimpleWorker
from sqlalchemy import select, update

from newsletter.core import clock
from newsletter.models import Frequency, OutboxEmail, OutboxKind, Subscriber, SuppressionReason, Topic
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import suppression
from tests.conftest import confirm_link, csrf_token


def path_of(link: str) -> str:
    return urlsplit(link).path


def link_to(mail, route: str) -> str:
    match = re.search(rf"(https?://\S+/{route}/\S+)", mail.get_body(("plain",)).get_content())
    assert match, route
    return match.group(1)


def click_confirm(client, mail, token: str | None = None):
    """Open the confirmation link and press its button, as the person does (``token``: the page
    is still open from before, its CSRF token with it)."""
    link = path_of(confirm_link(mail))
    token = token or csrf_token(client.get(link).get_data(as_text=True))
    response = client.post(link, data={"csrf_token": token})
    response.csrf = token
    return response


def welcome_rows(runtime) -> list[OutboxEmail]:
    with runtime.sessions() as session:
        return list(session.scalars(select(OutboxEmail).where(OutboxEmail.kind == OutboxKind.WELCOME)))


def topic_names(runtime, slugs) -> list[str]:
    with runtime.sessions() as session:
        return [session.scalar(select(Topic.name).where(Topic.slug == slug)) for slug in slugs]


def test_confirm_sends_one_welcome_with_topics_frequency_and_links(client, signup, runtime, work, smtp_sink):
    signup("ann@example.com", topics=["newsletter", "early-access"], first_name="Ann")
    work()
    [confirmation] = smtp_sink.take()
    first = click_confirm(client, confirmation)
    assert first.status_code == 200
    with runtime.sessions() as session:  # chosen in the preference centre before the worker runs
        session.execute(update(Subscriber).values(frequency=Frequency.WEEKLY))
        session.commit()

    work()
    [welcome] = smtp_sink.take()
    assert welcome["To"] == "ann@example.com" and "Welcome" in welcome["Subject"]
    text = welcome.get_body(("plain",)).get_content()
    html = welcome.get_body(("html",)).get_content()
    for name in topic_names(runtime, ["newsletter", "early-access"]):
        assert name in text and name in html
    assert "Hello Ann" in text and "at most once a week" in text and "at most once a week" in html
    assert "/confirm/" not in text  # nothing left to confirm

    preferences = client.get(path_of(link_to(welcome, "preferences")))
    assert preferences.status_code == 200
    assert re.search(r'value="weekly"\s+checked', preferences.get_data(as_text=True))  # Ann's own page
    assert client.get(path_of(link_to(welcome, "unsubscribe"))).status_code == 200
    assert link_to(welcome, "preferences") in html and link_to(welcome, "unsubscribe") in html

    # The same button pressed again: confirmed already, no second welcome.
    assert click_confirm(client, confirmation, first.csrf).status_code == 200
    work()
    assert smtp_sink.take() == []
    assert len(welcome_rows(runtime)) == 1


def test_a_later_resubscription_gets_no_second_welcome(client, signup, runtime, work, smtp_sink):
    signup("bob@example.com")
    work()
    click_confirm(client, smtp_sink.take()[0])
    work()
    [welcome] = smtp_sink.take()
    client.post(path_of(link_to(welcome, "unsubscribe")), data={"scope": "everything"})
    with runtime.sessions() as session:
        assert session.scalar(select(Subscriber.status)) == "unsubscribed"

    signup("bob@example.com")  # comes back later: a new request, confirmed again
    work()
    [confirmation] = smtp_sink.take()
    assert "confirm" in confirmation["Subject"].lower()
    assert "You are subscribed" in click_confirm(client, confirmation).get_data(as_text=True)
    work()
    assert smtp_sink.take() == []  # welcomed once per person, ever
    assert len(welcome_rows(runtime)) == 1


def test_no_welcome_when_the_setting_is_off(make_app, smtp_sink, work):
    app = make_app(WELCOME_EMAIL=False)
    client = app.test_client()
    page = client.get("/subscribe").get_data(as_text=True)
    client.post(
        "/subscribe",
        data={"csrf_token": csrf_token(page), "email": "cy@example.com", "topics": ["newsletter"]},
    )
    work()
    [confirmation] = smtp_sink.take()
    assert "You are subscribed" in click_confirm(client, confirmation).get_data(as_text=True)
    work()
    assert smtp_sink.take() == []
    assert welcome_rows(app.extensions["newsletter"]) == []


def test_the_welcome_row_is_written_with_the_confirmation_when_redis_is_down(make_app, smtp_sink, work):
    healthy = make_app()
    client = healthy.test_client()
    page = client.get("/subscribe").get_data(as_text=True)
    client.post(
        "/subscribe",
        data={"csrf_token": csrf_token(page), "email": "di@example.com", "topics": ["newsletter"]},
    )
    work()
    [confirmation] = smtp_sink.take()

    down = make_app(REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens there
    assert "You are subscribed" in click_confirm(down.test_client(), confirmation).get_data(as_text=True)
    [row] = welcome_rows(down.extensions["newsletter"])
    assert row.sent_at is None and smtp_sink.pending() == 0

    # Redis is back: a worker's sweep finds the welcome and sends it, once.
    from newsletter.subscribers.jobs import sweep_outbox

    rt = make_app().extensions["newsletter"]
    clock.travel(timedelta(minutes=1))
    assert sweep_outbox() == 1
    SimpleWorker([rt.queue("transactional")], connection=rt.redis).work(burst=True)
    [welcome] = smtp_sink.take()
    assert welcome["To"] == "di@example.com" and "Welcome" in welcome["Subject"]
    assert sweep_outbox() == 0


def test_a_hard_bounce_before_sending_stops_the_welcome(client, signup, runtime, work, smtp_sink):
    signup("ed@example.com")
    work()
    click_confirm(client, smtp_sink.take()[0])
    with runtime.sessions() as session:  # a hard bounce arrives before the worker gets to it
        suppression.suppress(session, address_hash("ed@example.com"), SuppressionReason.BOUNCED, "test")
        session.commit()
    work()
    assert smtp_sink.take() == []
    [row] = welcome_rows(runtime)
    assert row.sent_at is None and row.failed_at is not None and "suppressed (bounced)" in row.last_error
