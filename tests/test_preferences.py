"""Preference centre, RFC 8058 unsubscribe and link safety over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from newsletter.core import clock
from newsletter.models import ConsentEvent, Subscriber, Suppression
from newsletter.partners.registry import add_partner
from newsletter.subscribers import links
from newsletter.subscribers.tokens import Purpose, make_token
from tests.conftest import all_links, csrf_token


def path(url: str) -> str:
    return urlsplit(url).path


def reload(runtime, subscriber_id: int) -> Subscriber:
    with runtime.sessions() as session:
        sub = session.get(Subscriber, subscriber_id)
        _ = [(s.topic.slug, s.status) for s in sub.subscriptions], list(sub.partner_shares)
        return sub


def events(runtime, subscriber_id: int) -> list[ConsentEvent]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(ConsentEvent)
                .where(ConsentEvent.subscriber_id == subscriber_id)
                .order_by(ConsentEvent.id)
            )
        )


def topics_of(sub: Subscriber) -> dict[str, str]:
    return {s.topic.slug: s.status.value for s in sub.subscriptions}


def post_preferences(client, url: str, **fields):
    page = client.get(path(url)).get_data(as_text=True)
    data = {
        "csrf_token": csrf_token(page),
        "frequency": "any",
        "time_zone": "UTC",
        "first_name": "Ann",
        "topics": ["newsletter"],
        **fields,
    }
    return client.post(path(url), data=data, headers={"User-Agent": "prefs-test"})


def test_change_topics_frequency_zone_and_name_with_ledger(app, client, runtime, make_subscriber):
    sub = make_subscriber(topics=["newsletter"])
    url = links.preferences_url(app.settings, sub)
    page = client.get(path(url))
    assert page.status_code == 200 and "What we hold and why" in page.get_data(as_text=True)

    response = post_preferences(
        client,
        url,
        topics=["early-access", "product-news"],
        frequency="weekly",
        time_zone="Europe/Paris",
        first_name="Annie",
    )
    assert response.status_code == 200 and "Saved." in response.get_data(as_text=True)
    after = reload(runtime, sub.id)
    assert topics_of(after) == {
        "newsletter": "unsubscribed",
        "early-access": "active",
        "product-news": "active",
    }
    assert (after.frequency, after.time_zone, after.first_name) == ("weekly", "Europe/Paris", "Annie")

    [event] = events(runtime, sub.id)
    assert event.action == "preferences_changed" and event.user_agent == "prefs-test"
    assert event.details["before"]["topics"] == ["newsletter"]
    assert event.details["after"]["topics"] == ["early-access", "product-news"]
    assert event.details["before"]["frequency"] == "any" and event.details["after"]["frequency"] == "weekly"
    assert event.details["first_name"] == "changed" and "Annie" not in json.dumps(event.details)

    # Saving the same choices again writes nothing new.
    post_preferences(
        client,
        url,
        topics=["early-access", "product-news"],
        frequency="weekly",
        time_zone="Europe/Paris",
        first_name="Annie",
    )
    assert len(events(runtime, sub.id)) == 1


def test_pause_until_a_date_then_resume(app, client, runtime, make_subscriber):
    sub = make_subscriber()
    url = links.preferences_url(app.settings, sub)
    post_preferences(client, url, pause="2")
    paused = reload(runtime, sub.id).paused_until
    assert timedelta(days=13) < paused - clock.now() <= timedelta(days=14)
    assert "Paused until" in client.get(path(url)).get_data(as_text=True)
    post_preferences(client, url, resume="y")
    assert reload(runtime, sub.id).paused_until is None
    assert [e.details["after"]["paused_until"] is None for e in events(runtime, sub.id)] == [False, True]


def test_bad_form_values_are_a_400_not_a_500(app, client, make_subscriber):
    url = links.preferences_url(app.settings, make_subscriber())
    for fields in (
        {"frequency": "hourly"},
        {"time_zone": "Mars/Olympus"},
        {"pause": "52"},
        {"first_name": "A\r\nBcc: x"},
        {"topics": ["nope"]},
    ):
        assert post_preferences(client, url, **fields).status_code == 400


def test_partner_sharing_is_off_by_default_names_the_partner_and_is_in_the_ledger(
    make_app, runtime, make_subscriber
):
    app = make_app()
    client = app.test_client()
    rt = app.extensions["newsletter"]
    with rt.sessions() as session:
        add_partner(session, "pet-care", "Pet Care Co")
        session.commit()
    sub = make_subscriber()
    url = links.preferences_url(app.settings, sub)
    html = client.get(path(url)).get_data(as_text=True)
    assert "Share my email address and first name with Pet Care Co" in html
    assert (
        'id="partner-pet-care" value="pet-care"\n                 >' in html
        or "checked" not in html.split('id="partner-pet-care"')[1].split(">")[0]
    )
    post_preferences(client, url, partners=["pet-care"])
    post_preferences(client, url, partners=[])
    shares = events(rt, sub.id)
    assert [e.action for e in shares] == ["partner_share_granted", "partner_share_withdrawn"]
    assert all(e.details["partner"] == "pet-care" and e.wording_hash for e in shares)


def test_rfc8058_one_click_urlencoded_without_cookies(app, runtime, make_subscriber, smtp_sink):
    sub = make_subscriber(topics=["newsletter", "early-access"])
    url = links.unsubscribe_url(app.settings, sub, topic="newsletter")
    client = app.test_client(use_cookies=False)
    response = client.post(
        path(url), data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200 and response.location is None
    after = reload(runtime, sub.id)
    assert after.status == "unsubscribed" and set(topics_of(after).values()) == {"unsubscribed"}
    [event] = events(runtime, sub.id)
    assert event.action == "unsubscribed" and event.source == "rfc8058:one-click"
    with runtime.sessions() as session:
        assert (
            session.scalar(select(Suppression.reason).where(Suppression.email_hash == sub.email_hash))
            == "unsubscribed"
        )
    # idempotent: again, still 200, nothing new
    assert (
        client.post(
            path(url), data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
        ).status_code
        == 200
    )
    assert len(events(runtime, sub.id)) == 1


def test_rfc8058_one_click_multipart(app, runtime, make_subscriber):
    sub = make_subscriber()
    url = links.unsubscribe_url(app.settings, sub)
    client = app.test_client(use_cookies=False)
    response = client.post(
        path(url), data={"List-Unsubscribe": "One-Click"}, content_type="multipart/form-data"
    )
    assert response.status_code == 200
    assert reload(runtime, sub.id).status == "unsubscribed"


def test_unsubscribe_page_only_this_topic(app, client, runtime, make_subscriber):
    sub = make_subscriber(topics=["newsletter", "early-access"])
    url = links.unsubscribe_url(app.settings, sub, topic="early-access")
    page = client.get(path(url))
    assert page.status_code == 200 and "Only from “Early-access sales”" in page.get_data(as_text=True)
    assert reload(runtime, sub.id).status == "active"  # the GET changed nothing
    done = client.post(path(url), data={"scope": "topic"})
    assert done.status_code == 200 and "Unsubscribed from “Early-access sales”" in done.get_data(as_text=True)
    after = reload(runtime, sub.id)
    assert after.status == "active" and topics_of(after) == {
        "newsletter": "active",
        "early-access": "unsubscribed",
    }
    # leaving the last topic leaves everything
    client.post(path(links.unsubscribe_url(app.settings, sub, topic="newsletter")), data={"scope": "topic"})
    assert reload(runtime, sub.id).status == "unsubscribed"


@pytest.mark.parametrize("purpose", [Purpose.PREFERENCES, Purpose.UNSUBSCRIBE])
def test_tampered_and_wrong_purpose_tokens_get_a_friendly_4xx(app, client, make_subscriber, purpose):
    sub = make_subscriber()
    good = make_token(app.settings, purpose, {"s": sub.id, "h": sub.email_hash[:16]})
    other = Purpose.CONFIRM
    wrong = make_token(app.settings, other, {"s": sub.id, "h": sub.email_hash[:16]})
    prefix = "/preferences/" if purpose == Purpose.PREFERENCES else "/unsubscribe/"
    for token in (good[:-2] + ("xx" if not good.endswith("xx") else "yy"), wrong, "garbage", good + "."):
        assert "This link does not work" in client.get(prefix + token).get_data(as_text=True)
        # a POST without the page's CSRF token may be refused for that first: still a friendly 400
        post = client.post(prefix + token, data={})
        assert post.status_code == 400, token
        assert "This link does not work" in post.get_data(as_text=True) or "reload the page" in post.get_data(
            as_text=True
        )
    assert (
        client.post(
            "/confirm/" + make_token(app.settings, purpose, {"s": sub.id, "h": sub.email_hash[:16]}), data={}
        ).status_code
        == 400
    )


def test_links_signed_with_a_rotated_out_key_keep_working(make_app, make_subscriber, runtime):
    old = make_app(SECRET_KEY="2025-key")
    sub = make_subscriber()
    prefs = path(links.preferences_url(old.settings, sub))
    unsub = path(links.unsubscribe_url(old.settings, sub))
    new = make_app(SECRET_KEY="2026-key", SECRET_KEY_FALLBACKS=["2025-key"]).test_client(use_cookies=False)
    assert new.get(prefs).status_code == 200
    assert new.post(unsub, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert reload(runtime, sub.id).status == "unsubscribed"


def test_unsubscribe_links_never_expire_preference_links_last_a_year(app, client, make_subscriber):
    sub = make_subscriber()
    prefs = path(links.preferences_url(app.settings, sub))
    unsub = path(links.unsubscribe_url(app.settings, sub))
    clock.travel(timedelta(days=366))
    assert client.get(prefs).status_code == 200
    clock.travel(timedelta(days=3 * 365))
    assert client.get(unsub).status_code == 200
    assert client.get(prefs).status_code == 400


def test_a_link_scanner_getting_every_link_of_real_emails_changes_nothing(
    app, client, signup, runtime, work, smtp_sink, make_subscriber
):
    make_subscriber("known@example.com")
    signup("new@example.com")
    signup("known@example.com")
    work()
    mails = smtp_sink.take()
    urls = [u for m in mails for u in all_links(m)]
    assert any("/confirm/" in u for u in urls) and any("/unsubscribe/" in u for u in urls)
    assert any("/preferences/" in u for u in urls)

    def snapshot():
        with runtime.sessions() as session:
            subs = [
                (s.email, s.status, tuple(sorted((x.topic_id, x.status) for x in s.subscriptions)))
                for s in session.scalars(select(Subscriber).order_by(Subscriber.id))
            ]
            return (
                subs,
                len(list(session.scalars(select(ConsentEvent)))),
                len(list(session.scalars(select(Suppression)))),
            )

    before = snapshot()
    scanner = app.test_client(use_cookies=False)
    for url in urls:
        response = scanner.get(path(url), headers={"User-Agent": "SafeLinks scanner"})
        assert response.status_code < 500
        if "/preferences/" in url:
            scanner.get(path(url) + "/data.json")
            scanner.get(path(url) + "/erase")
    assert snapshot() == before


def test_download_my_data(app, client, runtime, make_subscriber):
    sub = make_subscriber(topics=["newsletter", "product-news"])
    response = client.get(path(links.preferences_url(app.settings, sub)) + "/data.json")
    assert response.status_code == 200 and "attachment" in response.headers["Content-Disposition"]
    data = response.get_json()
    assert data["email"] == "ann@example.com" and data["first_name"] == "Ann"
    assert data["topics"] == {"newsletter": "active", "product-news": "active"}
    assert {"consent_ledger", "emails_sent", "frequency", "time_zone", "partner_sharing"} <= set(data)


def test_an_unsubscribed_person_can_opt_back_in_from_preferences(app, client, runtime, make_subscriber):
    sub = make_subscriber()
    client.post(path(links.unsubscribe_url(app.settings, sub)), data={"List-Unsubscribe": "One-Click"})
    post_preferences(client, links.preferences_url(app.settings, sub), topics=["product-news"])
    after = reload(runtime, sub.id)
    assert after.status == "active" and topics_of(after)["product-news"] == "active"
    with runtime.sessions() as session:
        assert session.scalar(select(Suppression).where(Suppression.email_hash == sub.email_hash)) is None
