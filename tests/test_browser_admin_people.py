"""The dashboard's people pages in a real headless Chromium, with real data: people signed up and
confirmed through the services, a campaign sent to them over SMTP with a bounce, a complaint and a
click recorded, suppressions, and a partner exchange between two stores. Screenshots go to
tests/artifacts/ (the docs' images are copied from them)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from newsletter.customers.records import import_records
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.models import Delivery, Role, SignalKind, Subscriber, SuppressionReason
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import suppression
from tests.conftest import ARTIFACTS
from tests.feedback_helpers import send_campaign
from tests.people_helpers import join, not_welcomes, share_at
from tests.test_browser_admin import LAPTOP, PHONE, add, dashboard, sign_in  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser
pytest_plugins = ["tests.partner_stores"]

PEOPLE = ["ann.lee@example.com", "Anna@Example.com", "bob@example.com", "andy@example.org"]


def signal(runtime, email: str, kind: SignalKind, **extra) -> None:
    with runtime.sessions() as session:
        delivery_id = session.scalar(select(Delivery.id).join(Subscriber).where(Subscriber.email == email))
        record(session, runtime.settings, Signal(kind, "smtp", delivery_id=delivery_id, **extra))
        session.commit()


def no_sideways_scroll(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]


def test_search_a_profile_and_the_suppression_list(dashboard, smtp_sink, work, tmp_path):  # noqa: F811
    app, runtime, open_page = dashboard

    def subscribe(email, topics):
        join(runtime, email, topics=("newsletter", *topics), first_name=email.split(".")[0].title())

    send_campaign(runtime, subscribe, smtp_sink, work, tmp_path, PEOPLE)
    signal(runtime, "bob@example.com", SignalKind.BOUNCE_HARD, status_code="5.1.1")
    signal(runtime, "Anna@Example.com", SignalKind.COMPLAINT)
    signal(runtime, "ann.lee@example.com", SignalKind.CLICK)
    join(runtime, "andrea@example.net", confirm=False)
    with runtime.sessions() as session:
        import_records(
            session, [{"email": "ann.lee@example.com", "lifetime_value": "249.90", "orders_count": 4}]
        )
        suppression.suppress(
            session, address_hash("old@example.org"), SuppressionReason.MANUAL, "cli", "asked by phone"
        )
        session.commit()
    add(runtime, "vic@store.example", Role.VIEWER)

    page = open_page()
    sign_in(page, "vic@store.example", goto="/admin/subscribers")
    page.fill("#q", "AN")
    page.click("#search")
    page.wait_for_selector("#subscribers")
    assert page.locator("#subscribers .address").all_text_contents() == [
        "andrea@example.net",
        "andy@example.org",
        "ann.lee@example.com",
        "Anna@Example.com",
    ]
    assert page.locator("#subscribers tr", has_text="andrea").locator(".status").text_content() == "pending"
    page.screenshot(path=str(ARTIFACTS / "admin-subscribers.png"), full_page=True)

    page.click("text=ann.lee@example.com")
    page.wait_for_selector("#ledger")
    assert page.text_content("#address") == "ann.lee@example.com"
    assert page.text_content("#lifetime-value") == "249.90"
    actions = page.locator("#ledger tbody tr .action").all_text_contents()
    assert actions == ["signup_requested", "confirmed"]
    assert page.locator("#ledger tbody tr .source").all_text_contents() == ["web:subscribe", "web:confirm"]
    assert page.locator("#ledger .wording").first.text_content().startswith("signup-2026-11")
    delivery = page.locator("#deliveries tbody tr")
    assert delivery.count() == 1 and delivery.locator(".state .status").text_content() == "sent"
    assert delivery.locator(".click time").count() == 1
    page.screenshot(path=str(ARTIFACTS / "admin-subscriber.png"), full_page=True)

    page.goto("/admin/subscribers?q=bob")
    page.click("text=bob@example.com")
    page.wait_for_selector("#deliveries")
    assert page.locator("#deliveries .bounce").text_content().startswith("hard")
    assert page.locator("#suppressed .status").text_content() == "bounced"

    page.click("nav >> text=Suppressions")
    page.wait_for_selector("#suppressions")
    reasons = page.locator("#suppressions .reason").all_text_contents()
    assert reasons == ["manual", "complained", "bounced"]  # newest first
    assert "Anna@Example.com" in page.text_content("#suppressions")
    assert "asked by phone" in page.text_content("#suppressions")
    page.screenshot(path=str(ARTIFACTS / "admin-suppressions.png"), full_page=True)
    page.select_option("#reason", "bounced")
    page.click("#search")
    page.wait_for_selector("#suppressions")
    assert page.locator("#suppressions .address").all_text_contents() == ["bob@example.com"]

    page.goto("/admin/subscribers/424242")
    assert page.text_content("#not-found").startswith("There is no subscriber #424242.")

    # on a phone: tables scroll in their boxes, the page never sideways
    phone = open_page(PHONE)
    sign_in(phone, "vic@store.example", goto="/admin/subscribers?q=ann.lee")
    phone.click("text=ann.lee@example.com")
    phone.wait_for_selector("#ledger")
    no_sideways_scroll(phone)
    phone.screenshot(path=str(ARTIFACTS / "admin-subscriber-phone.png"), full_page=True)
    for url in ("/admin/subscribers?q=a", "/admin/suppressions"):
        phone.goto(url)
        no_sideways_scroll(phone)


def test_the_partners_page_after_an_exchange(stores, serve, browser, smtp_sink, tmp_path):
    a, b = stores(serve=serve)  # B, the store whose dashboard is opened, on real HTTP
    share_at(a, smtp_sink, "ann@example.com")
    share_at(a, smtp_sink, "fay@example.com")
    share_at(b, smtp_sink, "fay@example.com", partners=("store-a",))
    share_at(b, smtp_sink, "gus@example.com", partners=("store-a",))
    out = tmp_path / "a-to-b.jsonl"
    assert a.cli("partners", "export", "store-b", "--out", str(out)).exit_code == 0
    assert b.cli("partners", "import", "store-a", str(out)).exit_code == 0
    assert b.cli("partners", "import", "store-a", str(out)).exit_code == 0  # again: invited recently
    b.work()
    assert not_welcomes(smtp_sink.take()) == ["ann@example.com"]
    add(b.runtime, "vic@store.example", Role.VIEWER)

    context = browser.new_context(viewport=LAPTOP, base_url=b.settings.base_url)
    try:
        page = context.new_page()
        sign_in(page, "vic@store.example", goto="/admin/partners")
        row = page.locator("#partner-store-a")
        assert row.locator(".shares").text_content() == "2"
        assert row.locator(".sent").text_content() == "1" and row.locator(".pending").text_content() == "0"
        assert row.locator(".imports").text_content().startswith("2")
        imports = page.locator("#imports tbody tr")
        assert imports.count() == 2
        newest, first = imports.nth(0), imports.nth(1)
        assert newest.locator(".invited").text_content() == "invited: 0"
        assert "skipped, invited recently: 1" in newest.locator(".outcome").text_content()
        assert first.locator(".invited").text_content() == "invited: 1"
        assert "skipped, already subscribed: 1" in first.locator(".outcome").text_content()
        page.screenshot(path=str(ARTIFACTS / "admin-partners.png"), full_page=True)
        page.set_viewport_size(PHONE)
        no_sideways_scroll(page)
        page.screenshot(path=str(ARTIFACTS / "admin-partners-phone.png"), full_page=True)
    finally:
        context.close()
