"""The dashboard's campaign page and campaigns list in Chromium, on a really sent campaign.

A sale campaign with reward codes goes out through the SMTP sink (one person suppressed after
the audience was frozen, so the engine skips them); then a hard bounce, clicks, an early-access
redemption and a reward code used at the store. Every number the page shows (the report's
table, the timeline tables under the charts, the reasons, early access and reward codes) is
checked against ``campaign report --json``; the screenshots go to tests/artifacts/
(docs/images/dashboard-campaign*.png are copies of them).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.campaigns import rewards
from newsletter.core import clock
from newsletter.early_access import access
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.models import Campaign, Delivery, Role, SignalKind, Subscriber
from tests.conftest import ARTIFACTS
from tests.feedback_helpers import send_campaign
from tests.sending_helpers import now_floor
from tests.test_browser_admin import LAPTOP, PHONE, add, dashboard, sign_in  # noqa: F401 - the fixture
from tests.test_campaign_control_cli import run

pytestmark = pytest.mark.browser

PEOPLE = ["ann@example.com", "bob@example.com", "cy@example.com", "dee@example.com", "eve@example.com"]


def _sent(app, runtime, make_subscriber, smtp_sink, work, tmp_path) -> dict:
    """The campaign sent and its feedback recorded; returns its `campaign report --json`."""
    send_campaign(
        runtime,
        make_subscriber,
        smtp_sink,
        work,
        tmp_path,
        PEOPLE,
        reward='prefix = "VIP"\nexpires_in = "30d"',
        public_at=now_floor() + timedelta(days=2),
        suppress_after_freeze=("eve@example.com",),
    )
    with runtime.sessions() as session:
        by_address = dict(
            session.execute(
                select(Subscriber.email, Delivery.id).join(Delivery, Delivery.subscriber_id == Subscriber.id)
            ).all()
        )
        for kind, address, extra in (
            (SignalKind.BOUNCE_HARD, "ann@example.com", {"status_code": "5.1.1"}),
            (SignalKind.CLICK, "bob@example.com", {"link": 0}),
            (SignalKind.CLICK, "bob@example.com", {"link": 0}),
            (SignalKind.CLICK, "cy@example.com", {"link": 0}),
        ):
            record(session, runtime.settings, Signal(kind, "web", delivery_id=by_address[address], **extra))
        campaign = session.scalar(select(Campaign).where(Campaign.slug == "test-sale"))
        bob = session.scalar(select(Subscriber).where(Subscriber.email == "bob@example.com"))
        outcome = access.open_link(session, runtime.settings, bob, {"c": campaign.id}, clock.now())
        assert outcome.first_use
        code = session.scalar(select(Delivery.reward_code).where(Delivery.id == by_address["cy@example.com"]))
        assert rewards.redeem(session, runtime.settings, code, clock.now()) == "redeemed"
        session.commit()
    return json.loads(run(app, "report", "test-sale", "--json").output)


def table_rows(page, selector: str) -> list[list[str]]:
    return [
        [cell.text_content().strip() for cell in row.locator("th, td").all()]
        for row in page.locator(f"{selector} tbody tr").all()
    ]


def test_the_campaign_page_shows_the_timeline_reasons_and_codes_of_campaign_report(
    make_subscriber,
    smtp_sink,
    work,
    dashboard,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    app, runtime, open_page = dashboard
    data = _sent(app, runtime, make_subscriber, smtp_sink, work, tmp_path)
    add(runtime, "vic@store.example", Role.VIEWER)
    page = open_page(LAPTOP)
    violations = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    sign_in(page, "vic@store.example")

    row = page.locator("#campaign-test-sale")
    [wave] = data["waves"]
    assert row.locator("[data-wave=all] .count").text_content() == "5 of 5"  # 4 sent, 1 skipped: all done
    page.screenshot(path=str(ARTIFACTS / "admin-campaigns-list.png"), full_page=True)

    page.goto("/admin/campaigns/test-sale")
    page.wait_for_selector("#report")
    total = data["total"]
    shown = (total["delivered"], total["bounced_hard"], total["unique_clicks"], total["redemptions"])
    assert shown == (4, 1, 2, 1)

    # the charts: inline SVG, drawn under the page's nonce; the table under each has the same numbers
    for key in ("sends", "clicks", "redemptions"):
        assert page.locator(f"#timeline-{key} figure.chart svg").count() == 1, key
    for key, series in (("sends", {"sent": "sent", "bounced": "bounced"}), ("clicks", {"clicks": "click"})):
        heads = page.locator(f"#timeline-{key} thead th").all_text_contents()
        rows = table_rows(page, f"#timeline-{key}")
        for name, metric in series.items():
            column = heads.index(name)
            shown = {r[0]: int(r[column]) for r in rows if int(r[column])}
            expected = {}
            for hour, n in data["timeline"].get(metric, {}).items():
                label = f"{hour[5:10]} {hour[11:13]}:00"
                expected[label] = expected.get(label, 0) + n
            assert shown == expected, (key, name)
    assert sum(data["timeline"]["sent"].values()) == 4 and sum(data["timeline"]["click"].values()) == 3

    # why rows were not sent, per wave and in total
    reasons = table_rows(page, "#reasons")
    assert reasons == [
        [kind, reason, str(wave[kind][reason]), str(total[kind][reason])]
        for kind in ("deferred", "skipped")
        for reason in total[kind]
    ]
    assert reasons == [["skipped", "suppressed", "1", "1"]]

    # early access per wave and the reward codes
    early = {r[0]: r[1:] for r in table_rows(page, "#early-access")}
    assert early["all"][:2] == [str(wave["delivered"]), str(wave["redemptions"])] == ["4", "1"]
    assert early["total"][2] == f"{total['redemptions'] / total['delivered']:.2%}"
    assert page.locator("#codes-assigned").text_content() == str(data["reward_codes"]["assigned"]) == "4"
    assert page.locator("#codes-redeemed").text_content() == str(data["reward_codes"]["redeemed"]) == "1"
    assert violations == []
    page.screenshot(path=str(ARTIFACTS / "admin-campaign-full.png"), full_page=True)

    phone = open_page(PHONE)
    sign_in(phone, "vic@store.example", goto="/admin/campaigns/test-sale")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.screenshot(path=str(ARTIFACTS / "admin-campaign-full-phone.png"), full_page=True)


def test_the_page_follows_new_feedback_without_a_fold(
    make_subscriber,
    smtp_sink,
    work,
    dashboard,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    """No refresh point: the next view after a bounce shows it (the tallies change with the row)."""
    app, runtime, open_page = dashboard
    _sent(app, runtime, make_subscriber, smtp_sink, work, tmp_path)
    add(runtime, "vic@store.example", Role.VIEWER)
    page = open_page(LAPTOP)
    sign_in(page, "vic@store.example", goto="/admin/campaigns/test-sale")
    before = page.locator("#report tbody tr:has(th:text-is('bounced hard')) td").last.text_content()
    with runtime.sessions() as session:
        delivery_id = session.scalar(
            select(Delivery.id).join(Subscriber).where(Subscriber.email == "dee@example.com")
        )
        record(session, runtime.settings, Signal(SignalKind.BOUNCE_HARD, "smtp", delivery_id=delivery_id))
        session.commit()
    data = json.loads(run(app, "report", "test-sale", "--json").output)
    page.reload()
    after = page.locator("#report tbody tr:has(th:text-is('bounced hard')) td").last.text_content()
    assert (before, after) == ("1", str(data["total"]["bounced_hard"])) == ("1", "2")
    sends = table_rows(page, "#timeline-sends")
    column = page.locator("#timeline-sends thead th").all_text_contents().index("bounced")
    assert sum(int(r[column]) for r in sends) == 2
