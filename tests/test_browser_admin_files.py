"""/admin/files in a real headless Chromium: the folders with their problems, and both previews of an
email drawn under the strict CSP (the frames' own policy lets the email's styles through, no script).
Screenshots go to tests/artifacts/ (docs/images/dashboard-file*.png are copies of them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from newsletter.campaigns import scheduling
from newsletter.models import Role
from tests.campaign_helpers import EXAMPLES, MJML, TOML, write_campaign
from tests.conftest import ARTIFACTS
from tests.test_browser_admin import PHONE, add, dashboard, sign_in  # noqa: F401  (dashboard: a fixture)
from tests.test_campaign_cli import run

pytestmark = pytest.mark.browser

BAD_JINJA = MJML.replace("{{ subscriber.first_name }}", "{{ subscriber.first_name }")


@pytest.fixture
def campaigns_root(monkeypatch, tmp_path):
    """``campaigns/`` in the working directory, as the setting's default finds it (and the command,
    run from there, prints): two shipped examples and a broken one."""
    monkeypatch.chdir(tmp_path)
    root = Path("campaigns")
    for name in ("monthly-newsletter", "spring-sale"):
        shutil.copytree(EXAMPLES / name, root / name)
    write_campaign(root, TOML, BAD_JINJA, slug="bad-jinja")
    monkeypatch.delenv("NEWSLETTER_CAMPAIGNS_DIR", raising=False)
    return root


@pytest.fixture
def files(campaigns_root, dashboard):  # noqa: F811  (the fixture imported above)
    """The dashboard over ``campaigns_root`` (set up first, in its folder), both examples scheduled,
    one edited since."""
    app, runtime, open_page = dashboard
    assert app.settings.campaigns_dir == str(campaigns_root) == "campaigns"  # the default
    with runtime.sessions() as session:
        for name in ("monthly-newsletter", "spring-sale"):
            scheduling.schedule(session, app.settings, campaigns_root / name)
        session.commit()
    mjml = campaigns_root / "spring-sale" / "email.mjml"  # edited after scheduling
    mjml.write_text(mjml.read_text("utf-8").replace("up to 40% off", "up to 50% off"), "utf-8")
    add(runtime, "vic@store.example", Role.VIEWER)
    return app, campaigns_root, open_page


def whole_page(page, name: str) -> None:
    """A screenshot of the whole page with every frame drawn: the viewport grown to the page first
    (Chromium's full-page capture leaves out-of-process frames below the first screen blank)."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": page.evaluate("document.body.scrollHeight")})
    page.screenshot(path=str(ARTIFACTS / name))
    page.set_viewport_size(size)


def no_csp_refusals(page) -> list[str]:
    """Collect the console's CSP refusals of ``page`` (and its frames) into the returned list."""
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    return refused


def test_the_list_shows_each_folder_its_problems_and_its_campaign(files):
    app, root, open_page = files
    page = open_page()
    sign_in(page, "vic@store.example", goto="/admin/files")
    assert page.url.endswith("/admin/files")
    assert page.locator("#files tbody tr").count() == 3
    assert page.text_content("#folder-monthly-newsletter .status") == "ok"
    assert page.text_content("#folder-bad-jinja .status") == "1 error(s)"

    # the problem line is the command's line, word for word
    result = run(app, "validate", str(root / "bad-jinja"))
    # (its other lines: the http BASE_URL warning, the folder's summary)
    [printed] = [line for line in result.stderr.splitlines() if line.startswith(f"{root}/bad-jinja/")]
    assert page.text_content("#folder-bad-jinja li.problem") == printed
    assert printed.startswith(f"{root}/bad-jinja/email.mjml:5:45: ")

    # scheduled: a link to its campaign page, and its files as they were
    link = page.locator("#folder-monthly-newsletter .scheduled a")
    assert link.get_attribute("href") == "/admin/campaigns/monthly-newsletter"
    assert "files as scheduled" in page.text_content("#folder-monthly-newsletter .scheduled")
    changed = page.text_content("#folder-spring-sale .scheduled .changed")
    assert changed == "changed since scheduled: email.mjml changed"
    assert page.text_content("#folder-bad-jinja .scheduled").strip() == "not scheduled"
    page.screenshot(path=str(ARTIFACTS / "admin-files.png"), full_page=True)

    # a phone: the table scrolls in its box, the page does not scroll sideways
    phone = open_page(PHONE)
    sign_in(phone, "vic@store.example", goto="/admin/files")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.screenshot(path=str(ARTIFACTS / "admin-files-phone.png"), full_page=True)


def test_both_previews_draw_the_email_with_its_styles_under_the_csp(files):
    app, root, open_page = files
    page = open_page()
    refused = no_csp_refusals(page)
    sign_in(page, "vic@store.example", goto="/admin/files")
    page.click("#folder-monthly-newsletter a[href='/admin/files/monthly-newsletter']")
    page.wait_for_load_state("load")  # the frames included
    assert page.text_content("#subject") == "What's new at Our store this month"
    assert "2030-01-07 09:00" in page.text_content("#waves")

    sizes = {}
    for width in (600, 375):
        frame_element = page.locator(f"#preview-{width} iframe")
        box = frame_element.bounding_box()
        sizes[width] = round(box["width"])
        frame = frame_element.element_handle().content_frame()
        heading = frame.get_by_text("From our kitchen", exact=True)
        heading.wait_for()
        assert frame.get_by_text("Hello Alex,", exact=True).is_visible()
        # the email's own inline styles apply inside the frame (a srcdoc frame would inherit the
        # page's CSP and draw it unstyled): the heading's font-size="18px", bold
        assert heading.evaluate("e => getComputedStyle(e).fontSize") == "18px"
        assert heading.evaluate("e => getComputedStyle(e).fontWeight") == "700"
        # laid out at the frame's width: the phone sees MJML's one-column layout, no sideways scroll
        assert frame.evaluate("document.documentElement.clientWidth") == width
        assert frame.evaluate("document.documentElement.scrollWidth") <= width
        # and nothing in it runs: the frame's policy forbids scripts
        assert frame.evaluate("document.scripts.length") == 0
    assert sizes == {600: 600, 375: 375}
    assert refused == []
    whole_page(page, "admin-file-preview.png")

    phone = open_page(PHONE)
    sign_in(phone, "vic@store.example", goto="/admin/files/monthly-newsletter")
    phone.wait_for_load_state("load")
    for width in (600, 375):  # both drawn on a phone too (the 600 px one scrolls in its box)
        frame = phone.locator(f"#preview-{width} iframe").element_handle().content_frame()
        frame.get_by_text("From our kitchen", exact=True).wait_for()
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    whole_page(phone, "admin-file-preview-phone.png")


def test_a_broken_folder_shows_its_problems_instead_of_a_preview(files):
    app, root, open_page = files
    page = open_page()
    sign_in(page, "vic@store.example", goto="/admin/files/bad-jinja")
    assert page.text_content("#validation") == "1 error(s)"
    assert page.text_content("li.problem").startswith(f"{root}/bad-jinja/email.mjml:5:45: ")
    assert page.locator("iframe").count() == 0
    assert "the email does not render" in page.text_content("#no-preview")
    page.screenshot(path=str(ARTIFACTS / "admin-file-broken.png"), full_page=True)
