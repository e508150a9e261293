"""Store A exports, store B imports and invites; the person confirms at B in a real headless Chromium."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from newsletter.models import ConsentEvent, Subscriber
from newsletter.subscribers.wording import partner_wording
from tests.conftest import ARTIFACTS, confirm_link

pytestmark = pytest.mark.browser
pytest_plugins = ["tests.partner_stores"]  # the two-store fixtures


def test_invited_person_confirms_at_the_partner_store_in_a_browser(
    browser, serve, stores, smtp_sink, tmp_path
):
    a, b = stores(serve=serve)
    base_b = b.settings.base_url
    # Ann agrees at A to be shared with Store B; Bob only subscribes to A.
    for email, partners in (("ann@example.com", ["store-b"]), ("bob@example.com", [])):
        a.signup(email, partners=partners, first_name=email[:3].title())
        a.work()
        [mail] = smtp_sink.take()
        assert a.follow_confirm(mail).status_code == 200
        a.work()
        [welcome] = smtp_sink.take()
        assert "Welcome" in welcome["Subject"]

    out = tmp_path / "a-to-b.jsonl"
    assert a.cli("partners", "export", "store-b", "--out", str(out)).exit_code == 0
    assert [json.loads(line).get("email") for line in out.read_bytes().splitlines()[1:-1]] == [
        "ann@example.com"
    ]
    report = b.cli("partners", "import", "store-a", str(out))
    assert "  invited: 1" in report.output, report.output
    b.work()
    [invitation] = smtp_sink.take()
    link = confirm_link(invitation)
    assert link.startswith(base_b) and "Store A" in invitation["Subject"]

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 800, "height": 900})
    page = context.new_page()
    page.goto(link)
    page.wait_for_selector("#confirm")
    with b.runtime.sessions() as session:
        assert session.scalar(select(Subscriber.status)) == "pending"  # the GET changed nothing
    page.screenshot(path=str(ARTIFACTS / "partner-invite-confirm.png"), full_page=True)
    page.click("#confirm")
    page.wait_for_selector("text=You are subscribed")

    # B's own signup page offers sharing with A, unticked, in words that name A.
    page.goto(f"{base_b}/subscribe")
    assert not page.is_checked("#partner-store-a")
    assert page.inner_text("label[for=partner-store-a]") == partner_wording(None, "Store A").text
    context.close()

    with b.runtime.sessions() as session:
        ann = session.scalar(select(Subscriber))
        assert ann.email == "ann@example.com" and ann.status == "active" and ann.first_name == "Ann"
        events = list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))
    assert [e.action for e in events] == ["partner_imported", "confirmed"]
    assert events[0].details["partner"] == "store-a" and "Chrome" in events[1].user_agent
    b.work()
    [welcome] = smtp_sink.take()  # confirmed from the invitation: welcomed by B
    assert welcome["To"] == "ann@example.com" and "Welcome" in welcome["Subject"]
    # Re-importing the same file after the confirmation invites nobody.
    again = b.cli("partners", "import", "store-a", str(out))
    assert "  invited: 0" in again.output and "  skipped, already subscribed: 1" in again.output
    b.work()
    assert smtp_sink.take() == []
