"""An early-access sale end to end on real parts, as the operator, the subscriber and the store see it.

The shipped spring-sale folder (dates moved to now, the sale on a loopback shop) is scheduled
through the CLI, the engine sends the VIP wave into the SMTP sink, and headless Chromium follows
the personal link from the captured email to the shop, whose code the store's API accepts.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import urllib.request
from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from newsletter.campaigns.jobs import tick
from newsletter.core import clock
from newsletter.models import Subscriber, SubscriberStatus, Suppression
from newsletter.models.subscribers import address_hash
from tests.conftest import _free_port
from tests.sending_helpers import SALE_EXAMPLE, add_customer, now_floor, recipients, toml_time
from tests.test_campaign_control_cli import lines, run

pytestmark = pytest.mark.browser

TOKEN = "store-api-token-0123456789"
NO_CAPS = {"MARKETING_CAPS": "", "QUIET_HOURS": ""}


@pytest.fixture
def shop():
    """The store's sale page on its own loopback server: it shows what it was given."""

    @Request.application
    def page(request: Request) -> Response:
        code = request.args.get("nl_code", "")
        html = f"<!doctype html><title>Spring sale</title><h1>Spring sale</h1><p id=code>{code}</p>"
        return Response(html, content_type="text/html; charset=utf-8")

    port = _free_port()
    server = make_server("127.0.0.1", port, page, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}/spring-sale"
    server.shutdown()


def sale_folder(root, sale_url: str, vip_at, everyone_at, public_at, ends_at):
    """campaigns/spring-sale copied, its campaign.toml pointed at the shop and at these times."""
    folder = root / "spring-sale"
    shutil.copytree(SALE_EXAMPLE, folder)
    toml = (folder / "campaign.toml").read_text("utf-8")
    toml = re.sub(r'(?m)^url = ".*"$', f'url = "{sale_url}"', toml)
    toml = re.sub(r"(?m)^public_at = .*$", f"public_at = {toml_time(public_at)}", toml)
    toml = re.sub(r"(?m)^ends_at = .*$", f"ends_at = {toml_time(ends_at)}", toml)
    send_ats = iter([vip_at, everyone_at])
    toml = re.sub(r"(?m)^send_at = .*$", lambda _: f"send_at = {toml_time(next(send_ats))}", toml)
    (folder / "campaign.toml").write_text(toml, "utf-8")
    return folder


def http(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback only
        return answer.status, answer.read().decode("utf-8")


def test_early_access_link_from_a_real_email_in_chromium_then_one_click_unsubscribe(
    browser, serve, make_subscriber, smtp_sink, work, shop, tmp_path
):
    app, base_url = serve(API_TOKEN=TOKEN, **NO_CAPS)
    runtime = app.extensions["newsletter"]
    vera = make_subscriber("vera@example.com", topics=("early-access",), first_name="Vera")
    make_subscriber("rita@example.com", topics=("early-access",), first_name="Rita")
    with runtime.sessions() as session:
        add_customer(session, "vera@example.com", tier="gold", orders_count=7, lifetime_value=Decimal("900"))
        add_customer(session, "rita@example.com", tier="bronze", orders_count=1, lifetime_value=Decimal("30"))
    start = now_floor()
    public_at = start + timedelta(days=2)
    folder = sale_folder(
        tmp_path,
        shop,
        start + timedelta(hours=1),
        start + timedelta(days=1),
        public_at,
        public_at + timedelta(days=3),
    )

    # The operator schedules the sale and starts the VIP wave now; the engine sends it.
    scheduled = run(app, "schedule", str(folder))
    assert scheduled.exit_code == 0, scheduled.output
    assert lines(run(app, "send", str(folder), "--now")) == [
        "spring-sale: wave 'vip' starts at the next tick"
    ]
    tick()
    work()
    [email] = smtp_sink.take()
    assert email["To"] == "vera@example.com"
    html = email.get_body(("html",)).get_content()
    [link] = set(re.findall(rf'href="({re.escape(base_url)}/early-access/[^"]+)"', html))

    # Vera clicks in her browser: through the engine to the shop, with a code.
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(link)
        landed = urlsplit(page.url)
        assert f"{landed.scheme}://{landed.netloc}{landed.path}" == shop
        assert page.text_content("h1") == "Spring sale"
        [code] = parse_qs(landed.query)["nl_code"]
        assert page.text_content("#code") == code

        # The store asks the engine about the code: genuine, for this sale.
        status, body = http(
            "GET",
            f"{base_url}/api/early-access/verify?code={code}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        verdict = json.loads(body)
        assert status == 200 and verdict["valid"] is True, verdict
        assert verdict["campaign"] == "spring-sale" and verdict["subscriber_ref"]

        # The operator sees one redemption in the VIP wave.
        status_json = json.loads(run(app, "status", str(folder), "--json").output)
        assert status_json["waves"]["vip"]["redemptions"] == 1
        assert status_json["waves"]["vip"]["states"] == {"sent": 1}
        assert any(
            line.startswith("  wave vip (sending") and line.endswith("1 sent, 1 early-access redemptions")
            for line in lines(run(app, "status", str(folder)))
        )

        # Vera's mailbox unsubscribes her with the one-click POST from the email's own header.
        assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        [unsubscribe] = re.findall(r"<([^>]+)>", email["List-Unsubscribe"])
        assert unsubscribe.startswith(f"{base_url}/unsubscribe/")
        status, _ = http(
            "POST",
            unsubscribe,
            data=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200
        with runtime.sessions() as session:
            assert session.get(Subscriber, vera.id).status == SubscriberStatus.UNSUBSCRIBED
            hashes = set(session.scalars(select(Suppression.email_hash)))
            assert address_hash("vera@example.com") in hashes

        # The next wave goes out: Rita gets it, Vera does not.
        assert run(app, "send", str(folder), "--now").exit_code == 0
        tick()
        work()
        assert recipients(smtp_sink.take()) == {"rita@example.com": 1}

        # After public_at the same link says the sale is open to everyone (the app runs in this
        # process, so the moved clock applies to it) and leads to the plain sale.
        clock.travel(public_at - clock.now() + timedelta(minutes=1))
        page.goto(link)
        assert urlsplit(page.url).netloc == urlsplit(base_url).netloc
        assert page.text_content("h1") == "The sale is open to everyone"
        assert page.get_attribute("text=Go to the sale", "href") == shop
    finally:
        context.close()
    with runtime.sessions() as session:
        assert session.scalar(select(Subscriber.status).where(Subscriber.id == vera.id)) == "unsubscribed"
