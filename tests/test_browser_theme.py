"""The branded pages in a real headless Chromium, on a phone (390 px) and a desktop: the logo shows,
the brand colours apply, focus is visible, nothing scrolls sideways (screenshots: tests/artifacts/)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from newsletter.subscribers import links
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser

LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="180" height="48" viewBox="0 0 180 48">'
    b'<rect width="48" height="48" rx="10" fill="#f2c14e"/><text x="58" y="32" font-family="sans-serif"'
    b' font-size="22" font-weight="700" fill="#ffffff">Linen &amp; Tea</text></svg>'
)


class _Logo(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "image/svg+xml")
        self.send_header("Content-Length", str(len(LOGO)))
        self.end_headers()
        self.wfile.write(LOGO)

    def log_message(self, *args):
        pass


@pytest.fixture
def logo_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Logo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/logo.svg"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("width, label", [(390, "phone"), (1280, "desktop")])
def test_branded_signup_and_preferences(browser, serve, make_subscriber, logo_url, width, label):
    app, base_url = serve(
        STORE_NAME="Linen & Tea", LOGO_URL=logo_url, BRAND_COLOUR="#7b2d8b", HEADER_COLOUR="#2b2d42"
    )
    subscriber = make_subscriber()
    with app.app_context():
        preferences = links.preferences_url(app.settings, subscriber)
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if m.type == "error" else None)
    try:
        for name, url, button in [
            ("signup", f"{base_url}/subscribe", "button[type=submit]"),
            ("preferences", preferences, "#save"),
        ]:
            page.goto(url)
            page.wait_for_function("document.querySelector('.site-header img').complete")
            assert page.eval_on_selector(".site-header img", "i => i.naturalWidth") > 0, "the logo loaded"
            header = page.eval_on_selector(".site-header", "h => getComputedStyle(h).backgroundColor")
            assert header == "rgb(43, 45, 66)"
            colours = page.eval_on_selector(
                button, "b => [getComputedStyle(b).backgroundColor, getComputedStyle(b).color]"
            )
            assert colours == ["rgb(123, 45, 139)", "rgb(255, 255, 255)"]
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
                "no sideways scroll"
            )
            page.keyboard.press("Tab")  # the first focusable element: the header's link
            outline = page.evaluate(
                "(() => { const s = getComputedStyle(document.activeElement);"
                " return [s.outlineStyle, parseFloat(s.outlineWidth)]; })()"
            )
            assert outline[0] == "solid" and outline[1] >= 2, outline
            page.screenshot(path=str(ARTIFACTS / f"theme-{name}-{label}.png"), full_page=True)
        assert [v for v in violations if "favicon" not in v] == []
    finally:
        context.close()
