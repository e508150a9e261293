"""The dashboard in a real headless Chromium: sign-in, lock-out, idle expiry, roles, CSRF, the numbers.

Accounts are made through the service (``newsletter users`` has its own tests in test_admin.py);
everything else goes through the pages as a person uses them. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.admin import accounts
from newsletter.campaigns import scheduling
from newsletter.core import clock
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.models import Campaign, CampaignEvent, CampaignStatus, Delivery, Role, SignalKind, Subscriber
from tests.conftest import ARTIFACTS
from tests.feedback_helpers import send_campaign
from tests.sending_helpers import now_floor, write_campaign
from tests.test_campaign_control_cli import run

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def dashboard(serve, browser):
    """The app over HTTP, with a lock-out after 3 failures; ``open(viewport)`` gives a fresh browser page."""
    app, base_url = serve(
        MARKETING_CAPS="", QUIET_HOURS="", ADMIN_LOGIN_FAILURES="3", BOUNCE_ADDRESS="bounces@store.example"
    )
    runtime = app.extensions["newsletter"]
    contexts = []

    def open_page(viewport=LAPTOP):
        context = browser.new_context(viewport=viewport, base_url=base_url)
        contexts.append(context)
        return context.new_page()

    ARTIFACTS.mkdir(exist_ok=True)
    yield app, runtime, open_page
    for context in contexts:
        context.close()


def add(runtime, email: str, role: Role) -> str:
    with runtime.sessions() as session:
        accounts.add_account(session, email, role, PASSWORD)
        session.commit()
    return email


def sign_in(page, email: str, password: str = PASSWORD, goto: str = "/admin/campaigns"):
    page.goto(goto)
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#sign-in")
    page.wait_for_load_state()


def scheduled(runtime, tmp_path, slug: str = "spring-news") -> None:
    """A campaign whose one wave starts tomorrow: scheduled, nothing sent."""
    folder = write_campaign(
        tmp_path, slug=slug, topic="newsletter", waves=[("all", "all", now_floor() + timedelta(days=1))]
    )
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()


def status_of(runtime, slug: str) -> CampaignStatus:
    with runtime.sessions() as session:
        return session.scalar(select(Campaign.status).where(Campaign.slug == slug))


def test_a_wrong_password_is_refused_and_the_right_one_signs_in(dashboard):
    app, runtime, open_page = dashboard
    add(runtime, "ann@store.example", Role.VIEWER)
    page = open_page()
    page.goto("/admin/campaigns")
    assert page.url.endswith("/admin/login?next=/admin/campaigns")
    assert page.text_content(".flash") == "Please sign in."

    sign_in(page, "ann@store.example", "not the password")
    assert page.text_content("#error") == "Wrong email or password."
    page.screenshot(path=str(ARTIFACTS / "admin-login-wrong-password.png"), full_page=True)
    # an address without an account gets the same answer
    sign_in(page, "nobody@store.example")
    assert page.text_content("#error") == "Wrong email or password."

    sign_in(page, "ann@store.example")
    assert page.url.endswith("/admin/campaigns")
    assert page.text_content("#who") == "ann@store.example (viewer)"
    page.click("#logout")
    page.wait_for_selector("text=Signed out.")
    page.goto("/admin/campaigns")
    assert "/admin/login" in page.url


def test_an_account_is_locked_out_after_the_failures(dashboard, redis_conn):
    app, runtime, open_page = dashboard
    add(runtime, "ann@store.example", Role.MARKETER)
    add(runtime, "bob@store.example", Role.VIEWER)
    page = open_page()
    for _ in range(3):  # ADMIN_LOGIN_FAILURES
        sign_in(page, "ann@store.example", "a wrong guess")
        assert page.text_content("#error") == "Wrong email or password."

    sign_in(page, "ann@store.example")  # the right password, too late
    assert page.text_content("#error") == "Too many failed sign-ins. Try again in 15 minutes."
    assert "/admin/login" in page.url
    page.screenshot(path=str(ARTIFACTS / "admin-locked-out.png"), full_page=True)
    [key] = redis_conn.keys("nl:admin:login-fail:account:*")
    assert int(redis_conn.get(key)) == 3 and 0 < redis_conn.ttl(key) <= 15 * 60

    # the lock is on the account: another account from the same address still signs in
    sign_in(page, "bob@store.example")
    assert page.text_content("#who") == "bob@store.example (viewer)"

    # once the lock-out is over (the counter expired), the right password works again
    redis_conn.delete(key)
    other = open_page()
    sign_in(other, "ann@store.example")
    assert other.text_content("#who") == "ann@store.example (marketer)"


def test_a_session_ends_after_being_idle(dashboard):
    app, runtime, open_page = dashboard
    add(runtime, "ann@store.example", Role.VIEWER)
    page = open_page()
    sign_in(page, "ann@store.example")
    idle = timedelta(minutes=app.settings.admin_session_idle_minutes)
    assert idle == timedelta(hours=8)

    # used within the limit, again and again: still signed in (idle, not since sign-in)
    for _ in range(3):
        clock.travel(idle - timedelta(minutes=5))
        page.goto("/admin/campaigns")
        assert page.text_content("#who") == "ann@store.example (viewer)"

    clock.travel(idle + timedelta(minutes=1))
    page.goto("/admin/campaigns")
    assert "/admin/login" in page.url
    assert page.text_content(".flash") == "Your session expired. Please sign in again."
    page.screenshot(path=str(ARTIFACTS / "admin-session-expired.png"), full_page=True)


def test_a_viewer_cannot_pause_and_a_marketer_pauses_on_the_record(dashboard, tmp_path):
    app, runtime, open_page = dashboard
    scheduled(runtime, tmp_path)
    add(runtime, "vic@store.example", Role.VIEWER)
    marketer = add(runtime, "mia@store.example", Role.MARKETER)

    viewer = open_page()
    sign_in(viewer, "vic@store.example", goto="/admin/campaigns/spring-news")
    assert viewer.url.endswith("/admin/campaigns/spring-news")
    assert viewer.text_content("#status") == "scheduled"
    assert viewer.locator("#pause, #resume, #cancel").count() == 0
    viewer.screenshot(path=str(ARTIFACTS / "admin-campaign-viewer.png"), full_page=True)
    # the server refuses too, with a valid CSRF token of the viewer's own session
    token = viewer.get_attribute("input[name=csrf_token]", "value")
    answer = viewer.request.post("/admin/campaigns/spring-news/pause", form={"csrf_token": token})
    assert answer.status == 403
    assert "needs the marketer role" in answer.text()
    assert status_of(runtime, "spring-news") == CampaignStatus.SCHEDULED

    page = open_page()
    sign_in(page, marketer, goto="/admin/campaigns/spring-news")
    page.click("#pause")
    page.wait_for_selector("text=spring-news paused")
    assert page.text_content("#status") == "paused"
    assert status_of(runtime, "spring-news") == CampaignStatus.PAUSED
    with runtime.sessions() as session:
        event = session.scalars(select(CampaignEvent).order_by(CampaignEvent.id.desc())).first()
    assert (event.from_status, event.to_status, event.actor) == (
        CampaignStatus.SCHEDULED,
        CampaignStatus.PAUSED,
        "mia@store.example",
    )
    assert event.reason == "paused by mia@store.example in the dashboard"
    assert page.locator("#history .actor").last.text_content() == "mia@store.example"
    page.screenshot(path=str(ARTIFACTS / "admin-campaign-paused.png"), full_page=True)

    page.click("#resume")
    page.wait_for_selector("text=spring-news resumed")
    assert status_of(runtime, "spring-news") == CampaignStatus.SCHEDULED
    page.click("#cancel")  # without the box ticked: nothing happens but a word
    page.wait_for_selector("text=Tick the box to confirm")
    assert status_of(runtime, "spring-news") == CampaignStatus.SCHEDULED
    page.check("#cancel-confirm")
    page.click("#cancel")
    page.wait_for_selector("text=spring-news cancelled")
    assert page.locator("#pause, #resume, #cancel").count() == 0
    with runtime.sessions() as session:
        actors = [(e.to_status.value, e.actor) for e in session.scalars(select(CampaignEvent))]
    assert actors == [
        ("scheduled", "operator"),
        ("paused", marketer),
        ("scheduled", marketer),
        ("cancelled", marketer),
    ]


def test_a_forged_post_without_the_csrf_token_is_refused(dashboard, tmp_path):
    app, runtime, open_page = dashboard
    scheduled(runtime, tmp_path)
    add(runtime, "mia@store.example", Role.MARKETER)
    page = open_page()
    sign_in(page, "mia@store.example", goto="/admin/campaigns/spring-news")
    # the browser's cookie rides along, as on a forged request; the token does not
    for form in ({}, {"csrf_token": "forged"}):
        answer = page.request.post("/admin/campaigns/spring-news/pause", form=form)
        assert answer.status == 400
        assert "This form has expired or was not sent from our page" in answer.text()
    assert status_of(runtime, "spring-news") == CampaignStatus.SCHEDULED
    with runtime.sessions() as session:
        assert [e.to_status for e in session.scalars(select(CampaignEvent))] == [CampaignStatus.SCHEDULED]


def _cells(page) -> dict[str, list[str]]:
    """The campaign page's numbers table: label -> one cell per wave and the total."""
    found = {}
    for row in page.locator("#report tbody tr").all():
        label = row.locator("th").text_content().strip()
        if "reason" in (row.get_attribute("class") or ""):
            label = "  " + label
        found[label] = [cell.text_content() for cell in row.locator("td").all()]
    return found


def test_the_campaign_page_shows_the_numbers_of_campaign_report(
    make_subscriber, smtp_sink, work, dashboard, tmp_path
):
    # make_subscriber's app first: the served app (no caps, no quiet hours) is the one `work` runs jobs on
    app, runtime, open_page = dashboard
    send_campaign(
        runtime,
        make_subscriber,
        smtp_sink,
        work,
        tmp_path,
        ["ann@example.com", "bob@example.com", "cy@example.com"],
    )
    with runtime.sessions() as session:
        delivery_id = session.scalar(
            select(Delivery.id).join(Subscriber).where(Subscriber.email == "ann@example.com")
        )
        record(
            session,
            runtime.settings,
            Signal(SignalKind.BOUNCE_HARD, "smtp", delivery_id=delivery_id, status_code="5.1.1"),
        )
        session.commit()
    data = json.loads(run(app, "report", "test-sale", "--json").output)
    add(runtime, "vic@store.example", Role.VIEWER)

    page = open_page()
    sign_in(page, "vic@store.example")
    [wave] = data["waves"]
    row = page.locator("#campaign-test-sale")
    assert row.locator(".status").text_content() == data["status"] == "done"
    assert row.locator("[data-wave=all] .count").text_content() == "3 of 3"
    page.screenshot(path=str(ARTIFACTS / "admin-campaigns.png"), full_page=True)
    page.click("text=Test sale test-sale")
    page.wait_for_selector("#report")
    page.screenshot(path=str(ARTIFACTS / "admin-campaign.png"), full_page=True)

    cells = _cells(page)
    assert page.locator("#report thead th").all_text_contents()[1:] == [wave["name"], "total"]
    columns = [wave, data["total"]]
    for label, key in (
        ("delivered", "delivered"),
        ("queued", "queued"),
        ("sending", "sending"),
        ("failed", "failed"),
        ("uncertain", "uncertain"),
        ("bounced hard", "bounced_hard"),
        ("bounced soft", "bounced_soft"),
        ("complained", "complained"),
        ("unsubscribed", "unsubscribed"),
        ("unique clicks", "unique_clicks"),
        ("early-access redemptions", "redemptions"),
    ):
        assert cells[label] == [str(c[key]) for c in columns], label
    for kind in ("deferred", "skipped"):
        assert cells[kind] == [str(sum(c[kind].values())) for c in columns]
    for name, rate in data["total"]["rates"].items():
        label = next(k for k in cells if k.startswith(f"{name} rate"))
        shown = cells[label][-1]
        value = rate["rate"]
        assert shown == ("n/a" if value is None else f"{value:.2%}") + (" OVER" if rate["over"] else ""), name
    assert (data["total"]["delivered"], data["total"]["bounced_hard"]) == (3, 1)
    assert cells["bounce rate (limit 5.00%)"] == ["33.33% OVER", "33.33% OVER"]
    # the sends over time (tests/test_browser_admin_campaign.py checks every chart's table)
    heads = page.locator("#timeline-sends thead th").all_text_contents()
    sent = [
        row.locator("td").nth(heads.index("sent") - 1).text_content()
        for row in page.locator("#timeline-sends tbody tr").all()
    ]
    assert sum(map(int, sent)) == sum(data["timeline"]["sent"].values()) == 3

    # the same page on a phone: the table scrolls inside its box, the page itself does not
    phone = open_page(PHONE)
    sign_in(phone, "vic@store.example", goto="/admin/campaigns/test-sale")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    phone.screenshot(path=str(ARTIFACTS / "admin-campaign-phone.png"), full_page=True)
