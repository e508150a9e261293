"""A subscriber keeps control, in a real headless Chromium: preferences, pause, unsubscribe, data."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from newsletter.models import ConsentEvent, Subscriber, Suppression
from newsletter.partners.registry import add_partner
from newsletter.subscribers import links
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def load(runtime, subscriber_id):
    with runtime.sessions() as session:
        sub = session.get(Subscriber, subscriber_id)
        return sub, {s.topic.slug: s.status.value for s in sub.subscriptions}


def test_preference_centre_in_a_browser(browser, serve, make_app, tmp_path):
    app, base_url = serve()
    runtime = app.extensions["newsletter"]
    with runtime.sessions() as session:
        add_partner(session, "pet-care", "Pet Care Co")
        from newsletter.models import Subscription, SubscriptionStatus
        from newsletter.models.subscribers import address_hash
        from newsletter.subscribers.signup import topics_by_slug

        topics = topics_by_slug(session)
        sub = Subscriber(
            email="pat@example.com",
            email_hash=address_hash("pat@example.com"),
            first_name="Pat",
            status="active",
        )
        sub.subscriptions = [
            Subscription(topic_id=topics[t].id, status=SubscriptionStatus.ACTIVE)
            for t in ("newsletter", "early-access")
        ]
        session.add(sub)
        session.commit()

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 800, "height": 1200}, accept_downloads=True)
    page = context.new_page()
    page.goto(links.preferences_url(app.settings, sub))

    # topics, frequency, time zone, partner
    page.uncheck("#topic-newsletter")
    page.check("#topic-product-news")
    page.check("#frequency-monthly")
    page.select_option("#time_zone", "America/New_York")
    page.check("#partner-pet-care")
    page.screenshot(path=str(ARTIFACTS / "preferences.png"), full_page=True)
    page.click("#save")
    page.wait_for_selector("text=Saved.")
    after, topics_now = load(runtime, sub.id)
    assert topics_now == {"newsletter": "unsubscribed", "early-access": "active", "product-news": "active"}
    assert (after.frequency, after.time_zone) == ("monthly", "America/New_York")

    # pause for 4 weeks
    page.select_option("#pause", "4")
    page.click("#save")
    page.wait_for_selector("#paused-until")
    assert load(runtime, sub.id)[0].paused_until is not None

    # download my data
    with page.expect_download() as download:
        page.click("#download")
    data = json.loads(download.value.path().read_text("utf-8"))
    assert data["email"] == "pat@example.com" and data["partner_sharing"] == {"pet-care": True}

    # unsubscribe from one topic, from the link a campaign would carry
    page.goto(links.unsubscribe_url(app.settings, sub, topic="early-access"))
    assert load(runtime, sub.id)[1]["early-access"] == "active"  # the GET changed nothing
    page.click("#unsubscribe")
    page.wait_for_selector("text=Unsubscribed from “Early-access sales”")
    assert load(runtime, sub.id)[1] == {
        "newsletter": "unsubscribed",
        "early-access": "unsubscribed",
        "product-news": "active",
    }

    # and from everything
    page.goto(links.unsubscribe_url(app.settings, sub))
    page.click("#unsubscribe")
    page.wait_for_selector("text=You are unsubscribed")
    page.screenshot(path=str(ARTIFACTS / "unsubscribed.png"), full_page=True)
    assert load(runtime, sub.id)[0].status == "unsubscribed"

    # erase
    page.goto(links.preferences_url(app.settings, sub))
    page.click("#erase")
    page.click("#erase-confirm")
    page.wait_for_selector("text=Your data has been deleted")
    context.close()

    with runtime.sessions() as session:
        assert session.get(Subscriber, sub.id).status == "erased"
        # the earlier unsubscribe stays the reason on file: erasure never weakens an entry
        assert session.scalar(select(Suppression.reason)) == "unsubscribed"
        actions = [e.action for e in session.scalars(select(ConsentEvent).order_by(ConsentEvent.id))]
    assert actions == [
        "preferences_changed",
        "partner_share_granted",
        "preferences_changed",
        "unsubscribed",
        "unsubscribed",
        "erased",
    ]
