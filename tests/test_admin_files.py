"""/admin/files without a browser: the folders and their problems as ``campaign validate`` prints them,
scheduled or changed since, one folder's summary and preview frame, and no path outside the folder."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from newsletter.campaigns import scheduling
from newsletter.campaigns.folders import find_folder
from newsletter.core import clock
from newsletter.models import Role
from tests.campaign_helpers import EXAMPLES, MJML, TOML, write_campaign
from tests.sending_helpers import now_floor, toml_time
from tests.test_admin import add, sign_in
from tests.test_campaign_cli import run

#: one folder per kind of problem, each at its own place in its own file
BROKEN = {
    "bad-toml": ('name = "x\n', MJML),
    "bad-jinja": (TOML, MJML.replace("{{ subscriber.first_name }}", "{{ subscriber.first_name }")),
    "bad-mjml": (TOML, MJML.replace("<mj-text>", "<mj-txt>", 1)),
}


@pytest.fixture
def files_root(tmp_path) -> Path:
    """A campaigns folder: two shipped examples, a broken folder per kind, a folder that is no campaign."""
    root = tmp_path / "campaigns"
    for name in ("monthly-newsletter", "spring-sale"):
        shutil.copytree(EXAMPLES / name, root / name)
    for name, (toml, mjml) in BROKEN.items():
        write_campaign(root, toml, mjml, slug=name)
    (root / "notes").mkdir()
    (root / "notes" / "ideas.md").write_text("not a campaign\n", "utf-8")
    return root


@pytest.fixture
def files_app(make_app, files_root):
    app = make_app(CAMPAIGNS_DIR=str(files_root))
    add(app.extensions["newsletter"], "vic@store.example", Role.VIEWER)
    return app


@pytest.fixture
def viewer(files_app):
    client = files_app.test_client()
    assert sign_in(client, "vic@store.example").status_code == 303
    return client


def page_problems(html: str) -> list[str]:
    """The problem lines of a page as text (the template writes them as ``campaign validate`` does)."""
    import re
    from html import unescape

    items = re.findall(r'<li class="problem[^"]*">(.*?)</li>', html, re.DOTALL)
    return [unescape(re.sub(r"<[^>]+>", "", item)) for item in items]


def test_the_list_shows_every_folder_with_the_problems_campaign_validate_prints(
    files_app, viewer, files_root
):
    page = viewer.get("/admin/files")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for name in ("monthly-newsletter", "spring-sale", *BROKEN):
        assert f'id="folder-{name}"' in html and f'href="/admin/files/{name}"' in html
    assert "notes" not in html  # no campaign.toml: not a campaign folder, for the command neither

    # the command, with no --dir, checks the same folder (the CAMPAIGNS_DIR setting)
    result = run(files_app, "validate", NEWSLETTER_CAMPAIGNS_DIR=str(files_root))
    assert result.exit_code == 1
    printed = [line for line in result.stderr.splitlines() if not line.endswith("warning(s)")]
    assert printed and page_problems(html) == printed
    # each kind of problem at its own file:line:col
    at = {line.split(": ")[0] for line in printed}
    assert f"{files_root}/bad-toml/campaign.toml:1:10" in at  # the unterminated string
    assert f"{files_root}/bad-jinja/email.mjml:5:45" in at  # Jinja: after the lone }, its real column
    assert f"{files_root}/bad-mjml/email.mjml:5:5" in at  # the unknown tag, where it opens
    assert "monthly-newsletter: ok, 0 warning(s)" in result.stdout
    assert html.count('class="status ok"') == 2 and html.count('class="status invalid"') == 3


def test_one_folder_page_shows_its_problems_and_never_a_500(viewer, files_root):
    for name in BROKEN:
        page = viewer.get(f"/admin/files/{name}")
        assert page.status_code == 200, name
        html = page.get_data(as_text=True)
        assert page_problems(html) and all(p.startswith(f"{files_root}/{name}/") for p in page_problems(html))
        assert 'id="no-preview"' in html and "<iframe" not in html
        # the frame's route refuses politely instead of rendering a broken email
        frame = viewer.get(f"/admin/files/{name}/preview.html")
        assert frame.status_code == 404 and "does not render" in frame.get_data(as_text=True)


def test_an_edit_shows_at_the_next_reload(viewer, files_root):
    assert 'id="no-preview"' in viewer.get("/admin/files/bad-jinja").get_data(as_text=True)
    (files_root / "bad-jinja" / "email.mjml").write_text(MJML, "utf-8")  # fixed
    page = viewer.get("/admin/files/bad-jinja").get_data(as_text=True)
    assert page_problems(page) == [] and page.count("<iframe") == 2
    (files_root / "bad-jinja" / "campaign.toml").write_text(TOML.replace('"newsletter"', '"nope"'), "utf-8")
    [problem] = page_problems(viewer.get("/admin/files/bad-jinja").get_data(as_text=True))
    assert problem.startswith(f"{files_root}/bad-jinja/campaign.toml:4:9: unknown topic 'nope'")


def test_a_send_time_that_passes_is_a_problem_from_then_on(files_app, viewer, files_root):
    send_at = now_floor() + timedelta(minutes=10)
    folder = write_campaign(
        files_root, TOML.replace("2030-01-07T10:00:00+01:00", toml_time(send_at)), slug="soon"
    )

    def problems_at(moment: datetime) -> list[str]:
        clock.travel(moment - clock.now())
        return page_problems(viewer.get("/admin/files/soon").get_data(as_text=True))

    assert problems_at(send_at - timedelta(minutes=5)) == []
    # past once the 15 minutes' grace are over (the folder's report was kept until then)
    assert problems_at(send_at + timedelta(minutes=14)) == []
    shown = problems_at(send_at + timedelta(minutes=16))
    result = run(files_app, "validate", str(folder))
    assert shown == result.stderr.splitlines()[:-1]
    assert shown == [f"{folder}/campaign.toml:5:11: send_at is in the past ({send_at:%Y-%m-%d %H:%M} UTC)"]


def test_a_folder_whose_name_is_no_slug_is_listed_and_opens(viewer, files_root):
    write_campaign(files_root, slug="Old Campaign")
    html = viewer.get("/admin/files").get_data(as_text=True)
    assert 'href="/admin/files/Old%20Campaign"' in html
    page = viewer.get("/admin/files/Old%20Campaign")
    assert page.status_code == 200
    assert "the folder name is the campaign&#39;s slug" in page.get_data(as_text=True)


def test_a_good_folder_shows_its_summary_and_both_preview_frames(viewer):
    page = viewer.get("/admin/files/monthly-newsletter")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "What&#39;s new at {{ store.name }} this month" in html  # the subject as written
    assert "What&#39;s new at Our store this month" in html  # and as the sample subscriber reads it
    assert "<dd>newsletter</dd>" in html and "2030-01-07 09:00" in html  # topic, wave's send_at in UTC
    assert html.count('src="/admin/files/monthly-newsletter/preview.html"') == 2
    assert 'width="600"' in html and 'width="375"' in html and html.count("sandbox=") == 2
    # the page frames only itself, under the usual strict policy otherwise
    policy = page.headers["Content-Security-Policy"]
    assert "frame-src 'self'" in policy and "style-src 'nonce-" in policy and "script-src" not in policy

    frame = viewer.get("/admin/files/monthly-newsletter/preview.html")
    assert frame.status_code == 200
    email = frame.get_data(as_text=True)
    assert "From our kitchen" in email and "Hello Alex," in email  # rendered with the sample values
    policy = frame.headers["Content-Security-Policy"]
    assert "sandbox" in policy and "frame-ancestors 'self'" in policy
    assert "style-src 'unsafe-inline'" in policy  # the email's own inline styles
    assert "script" not in policy and "allow-scripts" not in policy  # default-src 'none': no script runs
    assert frame.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_a_campaign_with_an_email_per_wave_previews_each(viewer):
    page = viewer.get("/admin/files/spring-sale").get_data(as_text=True)
    # the first wave's email by default, a link to the other's
    assert page.count('src="/admin/files/spring-sale/preview.html?wave=vip"') == 2
    assert 'href="/admin/files/spring-sale?wave=everyone"' in page
    vip = viewer.get("/admin/files/spring-sale/preview.html?wave=vip").get_data(as_text=True)
    everyone = viewer.get("/admin/files/spring-sale/preview.html?wave=everyone").get_data(as_text=True)
    assert "most loyal customers" in vip and "most loyal customers" not in everyone
    assert "As an early-access subscriber" in everyone
    other = viewer.get("/admin/files/spring-sale?wave=everyone").get_data(as_text=True)
    assert other.count('src="/admin/files/spring-sale/preview.html?wave=everyone"') == 2
    for path in ("/admin/files/spring-sale?wave=nope", "/admin/files/spring-sale/preview.html?wave=nope"):
        assert viewer.get(path).status_code == 404


def test_scheduled_folders_link_to_their_campaign_and_say_when_their_files_changed(
    files_app, viewer, files_root
):
    runtime = files_app.extensions["newsletter"]
    with runtime.sessions() as session:
        scheduling.schedule(session, files_app.settings, files_root / "monthly-newsletter")
        session.commit()
    html = viewer.get("/admin/files").get_data(as_text=True)
    row = html.split('id="folder-monthly-newsletter"')[1].split("</tr>")[0]
    assert 'href="/admin/campaigns/monthly-newsletter"' in row and "files as scheduled" in row
    assert "not scheduled" in html.split('id="folder-spring-sale"')[1].split("</tr>")[0]

    mjml = files_root / "monthly-newsletter" / "email.mjml"
    mjml.write_text(mjml.read_text("utf-8").replace("winter soup", "summer soup"), "utf-8")
    (files_root / "monthly-newsletter" / "notes.md").write_text("ideas\n", "utf-8")
    html = viewer.get("/admin/files").get_data(as_text=True)
    row = html.split('id="folder-monthly-newsletter"')[1].split("</tr>")[0]
    assert "changed since scheduled: email.mjml changed, notes.md added" in row
    page = viewer.get("/admin/files/monthly-newsletter").get_data(as_text=True)
    assert "changed since scheduled: email.mjml changed, notes.md added" in page


@pytest.mark.parametrize(
    "path",
    [
        "/admin/files/..%2F..%2Fetc",
        "/admin/files/%2E%2E",
        "/admin/files/..",
        "/admin/files/..%2Foutside",
        "/admin/files/..%2Foutside/preview.html",
        "/admin/files/%2Fetc%2Fpasswd",
        "/admin/files/notes",
        "/admin/files/missing",
        "/admin/files/monthly-newsletter%2F..%2Fspring-sale",
    ],
)
def test_a_folder_name_outside_the_listing_is_refused(viewer, files_root, path):
    # a real campaign next to the folder: reachable only by climbing out of it
    write_campaign(files_root.parent, slug="outside")
    answer = viewer.get(path)
    assert answer.status_code == 404
    text = answer.get_data(as_text=True)
    assert "Test campaign" not in text and "root:" not in text and "<iframe" not in text


def test_find_folder_takes_only_names_it_lists(files_root):
    write_campaign(files_root.parent, slug="outside")
    assert find_folder(files_root, "spring-sale") == files_root / "spring-sale"
    for name in (
        "../outside",
        "..",
        ".",
        "",
        "/etc",
        "spring-sale/",
        "notes",
        str(files_root / "spring-sale"),
    ):
        assert find_folder(files_root, name) is None, name


def test_every_campaign_files_page_needs_an_account_and_none_writes(files_app, files_root):
    client = files_app.test_client()
    for path in ("/admin/files", "/admin/files/spring-sale", "/admin/files/spring-sale/preview.html"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].startswith("/admin/login")
    rules = [r for r in files_app.url_map.iter_rules() if r.rule.startswith("/admin/files")]
    assert len(rules) == 3 and all(r.methods <= {"GET", "HEAD", "OPTIONS"} for r in rules)


def test_an_empty_or_missing_campaigns_folder_is_a_page_not_an_error(make_app, tmp_path):
    app = make_app(CAMPAIGNS_DIR=str(tmp_path / "nowhere"))
    add(app.extensions["newsletter"], "vic@store.example", Role.VIEWER)
    client = app.test_client()
    sign_in(client, "vic@store.example")
    page = client.get("/admin/files")
    assert page.status_code == 200 and "No campaign folders in" in page.get_data(as_text=True)
