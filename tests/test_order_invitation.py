"""A first order's thank-you invites a non-subscriber once, by a link; only their click on the page joins."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from newsletter.cli import cli
from newsletter.core import clock
from newsletter.models import (
    ConsentAction,
    ConsentEvent,
    OrderInvitation,
    OutboxEmail,
    StoreEvent,
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)
from newsletter.models.subscribers import address_hash
from tests.conftest import csrf_token
from tests.test_cli import env_for
from tests.test_erasure_and_suppressions import scan_all_tables

TOKEN = "store-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
JOIN = re.compile(r"https://newsletter\.test(/join/\S+)")


def order(event_id: str, email: str = "ann@example.com", **extra) -> dict:
    return {"event_id": event_id, "kind": "order_placed", "email": email, "order_id": event_id, **extra}


@pytest.fixture
def store(make_app):
    return make_app(API_TOKEN=TOKEN, STORE_NAME="Bramble Books")


def post(app, body) -> list[dict]:
    response = app.test_client().post("/api/events", data=json.dumps(body), headers=AUTH)
    assert response.status_code == 200, response.get_json()
    data = response.get_json()
    return data["results"] if isinstance(body, list) else [data]


def thank_yous(app, work, smtp_sink, *events) -> list[str]:
    """Post the events, deliver them; the plain text of each email, in the order sent."""
    post(app, list(events))
    work()
    mails = sorted(smtp_sink.take(), key=lambda m: m["Subject"])
    return [m.get_body(("plain",)).get_content() for m in mails]


def join_path(text: str) -> str:
    match = JOIN.search(text)
    assert match, text
    return match.group(1)


def sessions(app):
    return app.extensions["newsletter"].sessions()


def test_a_first_order_invites_once_and_a_second_order_does_not(store, work, smtp_sink):
    [first] = thank_yous(store, work, smtp_sink, order("o-1"))
    assert "Thank you for your order o-1" in first and "asked only this once" in first
    join_path(first)
    [second] = thank_yous(store, work, smtp_sink, order("o-2"))
    assert "Thank you for your order o-2" in second and "/join/" not in second
    with sessions(store) as session:
        [invitation] = session.scalars(select(OrderInvitation)).all()
        assert invitation.email_hash == address_hash("ann@example.com") and invitation.accepted_at is None
        assert session.scalar(select(func.count(Subscriber.id))) == 0  # invited, not subscribed


def test_two_first_orders_in_one_batch_invite_once_and_the_html_carries_the_link(store, work, smtp_sink):
    post(store, [order("b-1"), order("b-2", email="Ann@Example.com")])
    work()
    mails = smtp_sink.take()
    assert len(mails) == 2
    invited = [m for m in mails if "/join/" in m.get_body(("plain",)).get_content()]
    assert len(invited) == 1
    assert "/join/" in invited[0].get_body(("html",)).get_content()


def test_the_store_may_say_it_is_not_a_first_order(store, work, smtp_sink):
    [text] = thank_yous(store, work, smtp_sink, order("o-1", first_order=False))
    assert "/join/" not in text
    [text] = thank_yous(store, work, smtp_sink, order("o-2", first_order=True))
    assert "/join/" not in text  # the engine saw an earlier order of this address


@pytest.mark.parametrize("who", ["subscribed", "unsubscribed", "bounced", "erased", "pending-confirmed-once"])
def test_no_invitation_for_subscribers_and_people_who_left_or_are_suppressed(
    store, work, smtp_sink, make_subscriber, who
):
    email = "ann@example.com"
    if who in ("subscribed", "unsubscribed", "pending-confirmed-once"):
        status = {
            "subscribed": SubscriberStatus.ACTIVE,
            "unsubscribed": SubscriberStatus.UNSUBSCRIBED,
            "pending-confirmed-once": SubscriberStatus.PENDING,  # signed up again after leaving
        }[who]
        make_subscriber(email, status=status)
    else:
        reason = SuppressionReason.BOUNCED if who == "bounced" else SuppressionReason.ERASED
        with sessions(store) as session:
            session.add(Suppression(email_hash=address_hash(email), reason=reason))
            session.commit()
    if who == "bounced":
        assert post(store, order("o-1"))[0]["status"] == "suppressed"  # no thank-you at all
        work()
        assert smtp_sink.take() == []
    else:
        [text] = thank_yous(store, work, smtp_sink, order("o-1"))
        assert "Thank you for your order o-1" in text and "/join/" not in text
    with sessions(store) as session:
        assert session.scalar(select(func.count(OrderInvitation.id))) == 0


def test_a_pending_never_confirmed_address_is_invited(store, work, smtp_sink, make_subscriber):
    with sessions(store) as session:
        session.add(
            Subscriber(
                email="ann@example.com",
                email_hash=address_hash("ann@example.com"),
                status=SubscriberStatus.PENDING,
                first_name="Someone typed this",
            )
        )
        session.commit()
    [text] = thank_yous(store, work, smtp_sink, order("o-1"))
    page = store.test_client()
    done = page.post(
        join_path(text),
        data={
            "csrf_token": csrf_token(page.get(join_path(text)).get_data(as_text=True)),
            "topics": "newsletter",
        },
    )
    assert done.status_code == 200
    with sessions(store) as session:
        ann = session.scalar(select(Subscriber))
        assert ann.status == SubscriberStatus.ACTIVE and ann.first_name is None  # not the stranger's name


def test_the_setting_off_sends_no_invitation(make_app, work, smtp_sink):
    app = make_app(API_TOKEN=TOKEN, ORDER_INVITATION="false")
    [text] = thank_yous(app, work, smtp_sink, order("o-1"))
    assert "Thank you for your order o-1" in text and "/join/" not in text
    with sessions(app) as session:
        assert session.scalar(select(func.count(OrderInvitation.id))) == 0


def test_subscribed_after_the_event_but_before_sending_gets_no_link(store, smtp_sink, work, make_subscriber):
    post(store, order("o-1"))  # recorded and invited; the worker has not sent it yet
    make_subscriber("ann@example.com")
    work()
    [mail] = smtp_sink.take()
    assert "/join/" not in mail.get_body(("plain",)).get_content()


def test_the_link_subscribes_only_when_the_person_clicks_join_and_the_ledger_says_so(store, work, smtp_sink):
    [text] = thank_yous(store, work, smtp_sink, order("o-1"))
    path = join_path(text)
    page = store.test_client()
    shown = page.get(path)
    assert shown.status_code == 200
    html = shown.get_data(as_text=True)
    assert 'id="join"' in html and "checked" not in html  # no topic ticked for them
    page.get(path)  # a link scanner opens it again: still nothing
    with sessions(store) as session:
        assert session.scalar(select(func.count(Subscriber.id))) == 0
        assert session.scalar(select(func.count(ConsentEvent.id))) == 0
    token = csrf_token(html)
    refused = page.post(path, data={"csrf_token": token})  # no topic chosen: nothing happens
    assert refused.status_code == 400 and "Please choose at least one topic." in refused.get_data(
        as_text=True
    )
    without_csrf = page.post(path, data={"topics": "newsletter"})
    assert without_csrf.status_code == 400
    with sessions(store) as session:
        assert session.scalar(select(func.count(Subscriber.id))) == 0

    done = page.post(
        path,
        data={"csrf_token": token, "topics": ["newsletter"]},
        environ_base={"REMOTE_ADDR": "198.51.100.4"},
        headers={"User-Agent": "Mail reader/2.0"},
    )
    assert done.status_code == 200 and "You are subscribed" in done.get_data(as_text=True)
    with sessions(store) as session:
        ann = session.scalar(select(Subscriber))
        assert ann.email == "ann@example.com" and ann.status == SubscriberStatus.ACTIVE
        assert {s.topic.slug: s.status.value for s in ann.subscriptions} == {"newsletter": "active"}
        ledger = session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)).all()
        assert [e.action for e in ledger] == [ConsentAction.SIGNUP_REQUESTED, ConsentAction.CONFIRMED]
        for event in ledger:
            assert event.source == "order invitation"
            assert (event.ip, event.user_agent) == ("198.51.100.4", "Mail reader/2.0")
            assert event.occurred_at is not None
        assert ledger[0].details["store_event"] == "o-1" and ledger[0].wording_hash
        assert ledger[1].details["request"] == ledger[0].id
        assert session.scalar(select(OrderInvitation.accepted_at)) is not None
    again = page.get(path)
    assert "You are already subscribed" in again.get_data(as_text=True)
    work()
    [welcome] = smtp_sink.take()  # the usual welcome, once
    assert welcome["To"] == "ann@example.com"


def test_a_tampered_or_expired_link_gets_a_clear_page(store, work, smtp_sink):
    [text] = thank_yous(store, work, smtp_sink, order("o-1"))
    path = join_path(text)
    page = store.test_client()
    tampered = page.get(path[:-3] + "xyz")
    assert tampered.status_code == 400 and "This link is not valid" in tampered.get_data(as_text=True)
    clock.travel(timedelta(days=store.settings.confirm_max_age_days + 1))
    expired = page.get(path)
    assert expired.status_code == 410 and "has expired" in expired.get_data(as_text=True)


def test_erasure_by_address_removes_store_events_mail_and_the_invitation(store, work, smtp_sink):
    thank_yous(store, work, smtp_sink, order("o-1"), order("o-2"), order("x-1", email="bob@example.com"))
    runner, env = CliRunner(), env_for(store)
    result = runner.invoke(cli, ["subscribers", "erase", "ann@example.com", "--yes"], env=env)
    assert result.exit_code == 0, result.output
    assert "erased ann@example.com" in result.output
    runtime = store.extensions["newsletter"]
    assert scan_all_tables(runtime, ["ann@example.com"]) == []
    with sessions(store) as session:
        assert session.scalars(select(StoreEvent.email)).all() == ["bob@example.com"]
        assert session.scalar(select(func.count(OutboxEmail.id))) == 1
        assert session.scalars(select(OrderInvitation.email_hash)).all() == [address_hash("bob@example.com")]
        entry = session.scalar(
            select(Suppression).where(Suppression.email_hash == address_hash("ann@example.com"))
        )
        assert entry.reason == SuppressionReason.ERASED
    # Store mail still reaches the address (it is order mail), but it is never invited again.
    [text] = thank_yous(store, work, smtp_sink, order("o-3"))
    assert "Thank you for your order o-3" in text and "/join/" not in text


def test_an_old_link_is_gone_after_erasure(store, work, smtp_sink):
    [text] = thank_yous(store, work, smtp_sink, order("o-1"))
    result = CliRunner().invoke(cli, ["subscribers", "erase", "ann@example.com", "--yes"], env=env_for(store))
    assert result.exit_code == 0, result.output
    gone = store.test_client().get(join_path(text))
    assert gone.status_code == 410 and "no longer on file" in gone.get_data(as_text=True)


def test_erasing_a_subscriber_removes_their_invitation_too(store, work, smtp_sink):
    from newsletter.subscribers.consent import RequestInfo
    from newsletter.subscribers.data_rights import erase

    [text] = thank_yous(store, work, smtp_sink, order("o-1"))
    page = store.test_client()
    path = join_path(text)
    page.post(
        path, data={"csrf_token": csrf_token(page.get(path).get_data(as_text=True)), "topics": "newsletter"}
    )
    with sessions(store) as session:
        ann = session.scalar(select(Subscriber))
        erase(session, ann, RequestInfo(None, None, "test"))
        session.commit()
        assert session.scalar(select(func.count(OrderInvitation.id))) == 0
        assert session.scalar(select(func.count(StoreEvent.id))) == 0


def test_download_my_data_lists_store_events_for_a_subscriber_and_for_an_address(
    store, work, smtp_sink, make_subscriber
):
    from newsletter.subscribers import links

    thank_yous(store, work, smtp_sink, order("o-1"), order("o-2", email="sub@example.com"))
    runner, env = CliRunner(), env_for(store)
    result = runner.invoke(cli, ["subscribers", "export", "ann@example.com"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["subscriber"] is None
    assert [(e["event_id"], e["kind"], e["status"]) for e in data["store_events"]] == [
        ("o-1", "order_placed", "queued")
    ]
    assert data["store_events"][0]["details"]["order_id"] == "o-1"
    assert [m["kind"] for m in data["store_emails_sent"]] == ["order_placed"]
    assert data["order_invitation"]["invited_at"] and data["order_invitation"]["accepted_at"] is None
    nobody = runner.invoke(cli, ["subscribers", "export", "nobody@example.com"], env=env)
    assert nobody.exit_code == 1 and "nothing is held about nobody@example.com" in nobody.output

    sub = make_subscriber("sub@example.com")
    url = links.preferences_url(store.settings, sub)
    download = store.test_client().get(urlsplit(url).path + "/data.json")
    assert download.status_code == 200
    mine = download.get_json()
    assert [e["event_id"] for e in mine["store_events"]] == ["o-2"]
    assert mine["consent_ledger"] == [] and mine["status"] == "active"
