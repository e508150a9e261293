"""A person signs up and confirms in a real headless Chromium, from the captured email."""

from __future__ import annotations

import pytest
from rq import SimpleWorker
from sqlalchemy import select

from newsletter.models import ConsentEvent, Subscriber
from tests.conftest import ARTIFACTS, confirm_link

pytestmark = pytest.mark.browser


def test_signup_and_confirm_in_a_browser(browser, serve, smtp_sink):
    app, base_url = serve()
    runtime = app.extensions["newsletter"]
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 800, "height": 900})
    page = context.new_page()

    page.goto(f"{base_url}/subscribe")
    assert page.locator("#consent-wording").inner_text().startswith("Yes, Our store may email me")
    page.fill("input[name=email]", "carla@example.com")
    page.fill("input[name=first_name]", "Carla")
    page.check("#topic-early-access")
    page.screenshot(path=str(ARTIFACTS / "signup-form.png"), full_page=True)
    page.click("button[type=submit]")
    page.wait_for_selector("text=Check your inbox")

    SimpleWorker([runtime.queue("transactional")], connection=runtime.redis).work(burst=True)
    [mail] = smtp_sink.take()
    link = confirm_link(mail)
    assert link.startswith(base_url)

    page.goto(link)
    page.wait_for_selector("#confirm")
    with runtime.sessions() as session:
        assert session.scalar(select(Subscriber.status)) == "pending"  # the GET changed nothing
    page.screenshot(path=str(ARTIFACTS / "confirm-page.png"), full_page=True)
    page.click("#confirm")
    page.wait_for_selector("text=You are subscribed")
    assert "Early-access sales" in page.content()
    page.screenshot(path=str(ARTIFACTS / "confirmed.png"), full_page=True)
    context.close()

    with runtime.sessions() as session:
        subscriber = session.scalar(select(Subscriber))
        assert subscriber.status == "active" and subscriber.first_name == "Carla"
        events = list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))
    assert [e.action for e in events] == ["signup_requested", "confirmed"]
    assert all("Chrome" in e.user_agent and e.ip == "127.0.0.1" for e in events)
    assert smtp_sink.take() == []
