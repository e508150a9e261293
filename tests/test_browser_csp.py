"""The Content-Security-Policy in a real headless Chromium: our pages keep their looks, nothing is blocked."""

from __future__ import annotations

import pytest

from newsletter.subscribers import links

pytestmark = pytest.mark.browser


def test_pages_render_under_the_csp_without_violations(browser, serve, make_subscriber):
    app, base_url = serve()
    subscriber = make_subscriber()
    with app.app_context():
        preferences = links.preferences_url(app.settings, subscriber)
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    # The browser reports every blocked style or script as a securitypolicyviolation event.
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation',"
        " e => console.error('CSP violation: ' + e.violatedDirective))"
    )
    try:
        for url, button, colour in [
            (f"{base_url}/subscribe", "button[type=submit]", "rgb(26, 127, 55)"),
            (preferences, "#save", "rgb(26, 127, 55)"),
            (preferences + "/erase", "#erase-confirm", "rgb(176, 0, 32)"),
        ]:
            response = page.goto(url)
            assert response.status == 200 and "nonce-" in response.headers["content-security-policy"]
            # The stylesheet applied: the button has the colour base.html gives it.
            background = page.eval_on_selector(button, "b => getComputedStyle(b).backgroundColor")
            assert background == colour, url
        assert [p for p in problems if "favicon" not in p] == []
    finally:
        page.close()
