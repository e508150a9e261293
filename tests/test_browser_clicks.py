"""A tracked link clicked in a real headless Chromium lands on its target and counts as a click."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.campaigns import scheduling
from newsletter.models import DeliveryEvent, SignalKind
from tests.sending_helpers import now_floor, run_engine, write_campaign
from tests.test_clicks import BROWSER

pytestmark = pytest.mark.browser

MJML = """{% extends "base.mjml" %}
{% block content %}
<mj-section><mj-column>
  <mj-text>Hello {{ subscriber.first_name or "there" }}, <a href="TARGET">see the new page</a>.</mj-text>
</mj-column></mj-section>
{% endblock %}
"""


def test_clicking_a_tracked_link_lands_on_its_target(
    browser, serve, make_subscriber, smtp_sink, work, tmp_path
):
    make_subscriber("ann@example.com", topics=("early-access",))
    app, base_url = serve(MARKETING_CAPS="", QUIET_HOURS="")
    runtime = app.extensions["newsletter"]
    target = f"{base_url}/subscribe?from=newsletter"
    folder = write_campaign(tmp_path, waves=[("all", "all", now_floor() - timedelta(minutes=1))])
    (folder / "email.mjml").write_text(MJML.replace("TARGET", target), "utf-8")
    toml = folder / "campaign.toml"
    toml.write_text("track_clicks = true\n" + toml.read_text("utf-8"), "utf-8")
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()
    run_engine(runtime, work)
    [(_sender, _rcpts, message)] = smtp_sink.take_envelopes()
    html = message.get_body(("html",)).get_content()
    assert f'href="{base_url}/c/' in html and target not in html

    context = browser.new_context(user_agent=BROWSER)  # headless Chromium's own agent is a scanner's
    page = context.new_page()
    page.set_content(html)
    page.click("text=see the new page")
    page.wait_for_url(target)
    assert page.locator("form").count() >= 1  # the signup page itself
    context.close()
    with runtime.sessions() as session:
        [event] = session.scalars(select(DeliveryEvent))
        assert (event.kind, event.link, event.user_agent) == (SignalKind.CLICK, 0, BROWSER)
