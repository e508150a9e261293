"""The overview page in a real headless Chromium, with real data: people who signed up and confirmed
through the signup pages, a sent campaign with a hard bounce and a complaint, an unsubscribe and
an erasure. Screenshots go to tests/artifacts/ (docs/images/dashboard-overview*.png are copies of them: a test
run never changes a tracked file)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from newsletter.core import clock
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.models import Delivery, Role, SignalKind, Subscriber
from newsletter.subscribers import data_rights, preferences
from newsletter.subscribers.consent import RequestInfo
from tests.conftest import ARTIFACTS, confirm_link
from tests.feedback_helpers import send_campaign
from tests.test_browser_admin import PHONE, add, dashboard, sign_in  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser

OPERATOR = RequestInfo(None, None, "test")


def sign_up(page, runtime, work, smtp_sink, email: str, confirm: bool) -> None:
    """The signup form, and the confirmation link from the mail it sent (clicked if ``confirm``)."""
    page.goto("/subscribe")
    page.fill("input[name=email]", email)
    page.check("#topic-newsletter")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Check your inbox")
    work(["transactional"])
    [mail] = smtp_sink.take()
    if confirm:
        page.goto(confirm_link(mail))
        page.click("#confirm")
        page.wait_for_selector("text=You are subscribed")
        work(["transactional"])
        smtp_sink.take()  # the welcome


def cells(page, row: str) -> dict[str, str]:
    return {
        cell.get_attribute("data-series"): cell.text_content()
        for cell in page.locator(f"#{row} td[data-series]").all()
    }


def test_the_overview_shows_growth_and_deliverability(make_subscriber, smtp_sink, work, dashboard, tmp_path):  # noqa: F811
    # make_subscriber's app first: the served app (no caps, no quiet hours) is the one `work` runs jobs on
    app, runtime, open_page = dashboard
    visitor = open_page()
    sign_up(visitor, runtime, work, smtp_sink, "ann@example.com", confirm=True)
    sign_up(visitor, runtime, work, smtp_sink, "bob@example.com", confirm=True)
    sign_up(visitor, runtime, work, smtp_sink, "cy@example.com", confirm=False)

    recipients = [f"p{i}@example.com" for i in range(20)]
    sent = send_campaign(runtime, make_subscriber, smtp_sink, work, tmp_path, recipients)
    with runtime.sessions() as session:
        for address, kind in ((recipients[0], SignalKind.BOUNCE_HARD), (recipients[1], SignalKind.COMPLAINT)):
            record(
                session,
                runtime.settings,
                Signal(kind, "test", verp=sent[address].ref, provider_event_id=address),
            )
        bob = session.scalar(select(Subscriber).where(Subscriber.email == "bob@example.com"))
        preferences.unsubscribe(session, bob, OPERATOR)
        erased = session.scalar(select(Subscriber).where(Subscriber.email == recipients[19]))
        data_rights.erase(session, erased, OPERATOR)
        session.commit()
        assert session.scalar(
            select(Delivery.bounce_kind).where(Delivery.id == sent[recipients[0]].ref.row_id)
        )

    add(runtime, "vic@store.example", Role.VIEWER)
    page = open_page()
    sign_in(page, "vic@store.example", goto="/admin/")
    assert page.url.endswith("/admin/overview")
    today = clock.now().date().isoformat()
    # the two form signups confirmed, the third pending; the campaign's people were made confirmed
    # by the test (no ledger signup), so only the unsubscribe and the erasure are theirs
    assert cells(page, f"day-{today}") == {
        "signups": "3",
        "confirmations": "2",
        "unsubscribes": "1",
        "erasures": "1",
        "left_a_topic": "0",
    }
    assert cells(page, "growth-total")["signups"] == "3"
    assert page.text_content("#total-confirmed") == "20"  # ann and 19 campaign recipients
    assert page.text_content("#total-pending") == "1"
    assert page.text_content("#total-unsubscribed") == "1"
    assert page.text_content("#total-erased") == "1"
    # 1 hard bounce in 20 delivered is 5.00%, at the 5% limit; 1 complaint is past the 0.3% limit
    assert page.text_content("#rate-bounce .rate") == "5.00%"
    assert page.text_content("#rate-bounce .verdict").strip() == "ok"
    assert page.text_content("#rate-complaint .rate") == "5.00%"
    assert page.text_content("#rate-complaint .limit") == "0.30%"
    assert page.text_content("#rate-complaint .verdict").strip() == "over"
    assert page.locator("figure.chart svg").count() == 2
    page.screenshot(path=str(ARTIFACTS / "admin-overview.png"), full_page=True)

    page.click("#window-90")
    assert page.url.endswith("/admin/overview?days=90")
    assert page.locator("#growth tbody tr").count() == 91  # the sum and 90 days, shown (details open or not)
    assert cells(page, "growth-total")["signups"] == "3"

    phone = open_page(PHONE)
    sign_in(phone, "vic@store.example", goto="/admin/overview")
    # nothing wider than the phone: the page never scrolls sideways
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.screenshot(path=str(ARTIFACTS / "admin-overview-phone.png"), full_page=True)
