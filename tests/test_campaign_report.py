"""``newsletter campaign report``: a real campaign's numbers per wave and in total, as a table and as JSON.

Two waves sent by the engine (sent, deferred for quiet hours, skipped as suppressed), feedback
recorded through feedback.record, an early-access redemption through its link.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

from sqlalchemy import select, update

from newsletter.campaigns import scheduling
from newsletter.campaigns.jobs import tick
from newsletter.campaigns.report import OPENS_NOTE, report
from newsletter.core import clock
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.models import Campaign, Delivery, SignalKind, Subscriber, SuppressionReason
from newsletter.subscribers import links, suppression
from tests.sending_helpers import add_customer, now_floor, write_campaign
from tests.test_campaign_control_cli import _Who, assert_one_line_error, lines, run
from tests.test_sending import day_zone, night_zone

VIPS = ("vip1", "vip2", "vip3", "vip4", "vip-night", "vip-gone")


def _start_next_wave(runtime, work) -> None:
    with runtime.sessions() as session:
        campaign = session.scalar(select(Campaign))
        assert scheduling.send_now(session, campaign, clock.now()).ok
        session.commit()
    tick()
    work()


def _signal(runtime, kind: SignalKind, address: str, **extra) -> None:
    with runtime.sessions() as session:
        delivery_id = session.scalar(
            select(Delivery.id).join(Subscriber).where(Subscriber.email == f"{address}@example.com")
        )
        record(
            session,
            runtime.settings,
            Signal(kind, extra.pop("source", "smtp"), delivery_id=delivery_id, **extra),
        )
        session.commit()


def test_the_report_counts_each_wave_and_the_total(make_app, make_subscriber, smtp_sink, work, tmp_path):
    app = make_app(MARKETING_CAPS="", QUIET_HOURS="21:00-08:00")
    runtime = app.extensions["newsletter"]
    for name in (*VIPS, "reg1", "reg2"):
        make_subscriber(f"{name}@example.com", topics=("early-access",))
    with runtime.sessions() as session:
        for name in VIPS:
            add_customer(
                session, f"{name}@example.com", tier="vip", orders_count=2, lifetime_value=Decimal(9)
            )
        session.execute(update(Subscriber).values(time_zone=day_zone()))
        session.execute(
            update(Subscriber)
            .where(Subscriber.email == "vip-night@example.com")
            .values(time_zone=night_zone())
        )
        gone = session.scalar(select(Subscriber).where(Subscriber.email == "vip-gone@example.com"))
        suppression.suppress(session, gone.email_hash, SuppressionReason.MANUAL, "test", "")
        session.commit()
    start = now_floor()
    folder = write_campaign(
        tmp_path,
        waves=[
            ("vip", 'tier == "vip"', start + timedelta(hours=1)),
            ("everyone", "all", start + timedelta(days=1)),
        ],
        public_at=start + timedelta(days=2),
    )
    assert run(app, "schedule", str(folder)).exit_code == 0
    _start_next_wave(runtime, work)
    _start_next_wave(runtime, work)
    assert len(smtp_sink.take()) == 6

    _signal(runtime, SignalKind.BOUNCE_HARD, "vip1", status_code="5.1.1")
    _signal(runtime, SignalKind.BOUNCE_SOFT, "vip2", status_code="4.2.2")
    _signal(runtime, SignalKind.COMPLAINT, "vip3")
    _signal(runtime, SignalKind.COMPLAINT, "vip3", source="webhook:ses")  # the same message twice: one
    _signal(runtime, SignalKind.CLICK, "vip4", source="web", link=0)
    _signal(runtime, SignalKind.CLICK, "vip4", source="web", link=0)
    _signal(runtime, SignalKind.SCANNER, "vip4", source="web", link=1)
    _signal(runtime, SignalKind.CLICK, "reg1", source="web", link=1)
    _signal(runtime, SignalKind.UNSUBSCRIBE, "reg1", source="web")
    with runtime.sessions() as session:
        campaign = session.scalar(select(Campaign))
        vip4 = session.scalar(select(Subscriber.id).where(Subscriber.email == "vip4@example.com"))
    link = urlsplit(links.early_access_url(app.settings, _Who(vip4, runtime), campaign.id)).path
    assert app.test_client().get(link).status_code == 303

    table = run(app, "report", str(folder))
    assert table.exit_code == 0, table.output
    as_json = run(app, "report", "test-sale", "--json")  # a slug works as well as a path
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)

    vip, everyone = data["waves"]
    assert (vip["name"], everyone["name"]) == ("vip", "everyone")
    expected_vip = {
        "delivered": 4,
        "deferred": {"quiet hours": 1},
        "skipped": {"suppressed": 1},
        "failed": 0,
        "uncertain": 0,
        "queued": 0,
        "bounced_hard": 1,
        "bounced_soft": 1,
        "complained": 1,
        "unsubscribed": 0,
        "unique_clicks": 1,
        "redemptions": 1,
    }
    assert {key: vip[key] for key in expected_vip} == expected_vip
    assert (everyone["delivered"], everyone["unique_clicks"], everyone["unsubscribed"]) == (2, 1, 1)
    total = data["total"]
    assert (total["delivered"], total["bounced_hard"], total["complained"], total["unique_clicks"]) == (
        6,
        1,
        1,
        2,
    )
    assert total["rates"]["complaint"] == {
        "count": 1,
        "delivered": 6,
        "rate": 1 / 6,
        "limit": 0.003,
        "over": True,
    }
    assert total["rates"]["bounce"]["limit"] == 0.05 and total["rates"]["click"]["rate"] == 2 / 6
    assert total["rates"]["unsubscribe"]["limit"] is None
    assert data["links"] == [
        {"link": 0, "url": None, "clicks": 2, "scanners": 0},
        {"link": 1, "url": None, "clicks": 1, "scanners": 1},
    ]
    assert "opens" not in total and data["opens_note"] is None  # opens are not tracked

    # The table says the same: one column per wave and the total.
    shown = lines(table)
    assert shown[0] == "test-sale: sending"
    assert shown[1].split() == ["vip", "everyone", "total"]

    def cells(label: str) -> list[str]:
        [line] = [line for line in shown if line.startswith(label + "  ")]
        return line[len(label) :].split()

    assert cells("delivered") == ["4", "2", "6"]
    assert cells("  quiet hours") == ["1", "0", "1"]
    assert cells("  suppressed") == ["1", "0", "1"]
    assert cells("bounced hard") == ["1", "0", "1"]
    assert cells("unique clicks") == ["1", "1", "2"]
    assert cells("early-access redemptions") == ["1", "0", "1"]
    assert cells("complaint rate (limit 0.30%)") == ["25.00%", "OVER", "0.00%", "16.67%", "OVER"]
    assert cells("bounce rate (limit 5.00%)") == ["25.00%", "OVER", "0.00%", "16.67%", "OVER"]
    assert "  #0: 2 clicks, 0 scanner visits  (link not in the frozen campaign)" in shown


def test_a_campaign_with_no_feedback_shows_zeros_and_rates_na(make_app, make_subscriber, tmp_path):
    app = make_app(MARKETING_CAPS="", QUIET_HOURS="")
    runtime = app.extensions["newsletter"]
    make_subscriber("ann@example.com", topics=("newsletter",))
    folder = write_campaign(
        tmp_path, slug="quiet", topic="newsletter", waves=[("all", "all", now_floor() + timedelta(hours=1))]
    )
    assert_one_line_error(
        run(app, "report", str(folder)), "quiet: not scheduled (run `newsletter campaign schedule`)"
    )
    assert run(app, "schedule", str(folder)).exit_code == 0

    data = json.loads(run(app, "report", "quiet", "--json").output)
    [wave] = data["waves"]
    assert wave["delivered"] == data["total"]["delivered"] == 0
    assert {name: rate["rate"] for name, rate in data["total"]["rates"].items()} == dict.fromkeys(
        ("bounce", "complaint", "unsubscribe", "click")
    )
    shown = lines(run(app, "report", "quiet"))
    assert shown[0] == "quiet: scheduled"
    assert [line.split()[-2:] for line in shown if line.startswith("click rate")] == [["n/a", "n/a"]]

    # A campaign that tracks opens shows them, with the note on their reliability.
    with runtime.sessions() as session:
        campaign = session.scalar(select(Campaign))
        campaign.compiled = {**campaign.compiled, "track_opens": True}
        session.commit()
        numbers = report(session, runtime.settings, campaign)
    assert numbers.total.opens == 0 and numbers.opens_note == OPENS_NOTE
    shown = lines(run(app, "report", "quiet"))
    assert shown[-1] == f"* {OPENS_NOTE}" and any(line.startswith("opens *") for line in shown)
