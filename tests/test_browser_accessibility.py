"""axe-core (npm, tests/js) over every subscriber page, in each shipped language, in real Chromium:
no serious or critical violation. The admin's login page too (the rest sits behind it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from newsletter.subscribers import links
from newsletter.web.i18n import shipped_languages
from tests.conftest import confirm_link

pytestmark = pytest.mark.browser

AXE = Path(__file__).parent / "js" / "node_modules" / "axe-core" / "axe.min.js"
TOKEN = "store-api-token-0123456789"
BAD = ("serious", "critical")


def axe_problems(page, name: str) -> list[str]:
    """The serious and critical violations axe finds on the page now, one line each."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{name} [{page.url}]: {v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(json.dumps(n["target"]) for n in v["nodes"][:5])
        for v in result["violations"]
        if v["impact"] in BAD
    ]


@pytest.mark.parametrize("language", shipped_languages())
def test_every_subscriber_page_passes_axe(language, browser, serve, make_subscriber, work, smtp_sink):
    if not AXE.exists():
        pytest.fail(f"axe-core is not installed: (cd {AXE.parents[2]} && npm ci)")
    app, base_url = serve(API_TOKEN=TOKEN)
    settings = app.settings
    active = make_subscriber("pat@example.com", topics=("newsletter", "early-access"))
    leaving = make_subscriber("lee@example.com")
    # a CSP-free context: axe is injected as a script tag (the pages allow only their own files)
    context = browser.new_context(
        bypass_csp=True, locale=language, extra_http_headers={"Accept-Language": language}
    )
    page = context.new_page()
    problems: list[str] = []

    def check(name: str, url: str | None = None) -> None:
        if url is not None:
            page.goto(url)
        problems.extend(axe_problems(page, name))

    check("signup", f"{base_url}/subscribe")
    page.click("button[type=submit]")  # empty: every error at once
    page.wait_for_selector("#error-summary")
    check("signup with errors")
    page.fill("#email", "new@example.com")
    page.check("#topic-newsletter")
    page.click("button[type=submit]")
    page.wait_for_selector("h1")
    check("check inbox")
    work()
    confirm = [m for m in smtp_sink.take() if "new@example.com" in m["To"]]
    check("confirm", confirm_link(confirm[0]))
    page.click("#confirm")
    page.wait_for_selector("#preferences")
    check("confirmed")

    check("preferences", links.preferences_url(settings, active))
    page.fill("#first_name", "line\u2028break")
    page.click("#save")
    page.wait_for_selector("#error-summary")
    check("preferences with errors")
    check("unsubscribe", links.unsubscribe_url(settings, active, topic="newsletter"))
    page.click("#unsubscribe")
    page.wait_for_selector("h1")
    check("unsubscribed")
    check("erase", links.preferences_url(settings, leaving) + "/erase")
    page.click("#erase-confirm")
    page.wait_for_selector("h1")
    check("erased")

    check("link problem", f"{base_url}/confirm/not-a-token")
    check("bad link error", f"{base_url}/preferences/not-a-token")
    check("not found", f"{base_url}/no-such-page")
    check("early access", links.early_access_url(settings, active, 987654))

    client = app.test_client()
    response = client.post(
        "/api/events",
        data=json.dumps(
            {"event_id": "o-1", "kind": "order_placed", "email": "ord@example.com", "order_id": "o-1"}
        ),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    work()
    [thanks] = [m for m in smtp_sink.take() if "ord@example.com" in m["To"]]
    join = re.search(r"(https?://\S+/join/\S+)", thanks.get_body(("plain",)).get_content()).group(1)
    check("join", join)
    page.click("#join")  # no topic ticked
    page.wait_for_selector("#error-summary")
    check("join with errors")

    check("send my links", f"{base_url}/links")
    page.click("#send")
    page.wait_for_selector("#error-summary")
    check("send my links with errors")
    page.fill("#email", "pat@example.com")
    page.click("#send")
    page.wait_for_selector("#links-sent")
    check("links sent")

    check("admin login", f"{base_url}/admin/login")
    context.close()
    assert not problems, "axe found serious or critical problems:\n" + "\n".join(problems)


def test_axe_reports_what_it_should(browser):
    """The check itself: a page with an unlabelled input and an image without alt text fails."""
    page = browser.new_page()
    page.set_content(
        '<html lang="en"><title>t</title><main><h1>x</h1><img src="data:,"><input type="text"></main></html>'
    )
    found = axe_problems(page, "broken")
    page.close()
    assert any("image-alt" in p for p in found) and any("label" in p for p in found), found
