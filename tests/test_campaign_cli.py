"""``newsletter campaign ...`` as an operator runs it: real database, SMTP sink, Chromium."""

from __future__ import annotations

import email
import email.policy
import struct

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from newsletter.campaigns import scheduling
from newsletter.cli import cli
from newsletter.models import Campaign
from tests.campaign_helpers import EXAMPLES, MJML, TOML, write_campaign
from tests.conftest import CHROMIUM
from tests.test_cli import env_for


def run(app, *args, **env):
    env = {**env_for(app), "NEWSLETTER_BASE_URL": app.settings.base_url, **env}
    return CliRunner().invoke(cli, ["campaign", *args], env=env)


def assert_short_lines(data: bytes) -> None:
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_validate_passes_on_the_shipped_examples(app):
    result = run(app, "validate", "--dir", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no problems at all
    assert "spring-sale: ok, 0 warning(s)" in result.stdout
    assert "monthly-newsletter: ok, 0 warning(s)" in result.stdout


def test_validate_prints_every_problem_and_fails(app, tmp_path):
    good = write_campaign(tmp_path, slug="good")
    bad = write_campaign(
        tmp_path,
        TOML.replace('topic = "newsletter"', 'topic = "nope"'),
        MJML.replace("subscriber.first_name", "subscriber.shoe_size"),
        slug="bad",
    )
    result = run(app, "validate", str(good), str(bad))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{bad}/campaign.toml:4:9: unknown topic 'nope' (known: newsletter, early-access, product-news)",
        f"{bad}/email.mjml:5:23: 'dict object' has no attribute 'shoe_size'",
        f"{bad}: 2 error(s), 0 warning(s)",
    ]
    assert result.stdout.splitlines() == [f"{good}: ok, 0 warning(s)"]


def test_validate_reports_toml_audience_jinja_and_mjml_problems_at_once(app, tmp_path):
    toml = TOML.replace("+01:00", "")  # no UTC offset
    bad = write_campaign(
        tmp_path,
        TOML.replace("{{ subscriber.first_name }}", "{{ subscriber.first_name }").replace(
            "send_at", '[[wave]]\nname = "a"\naudience = "all and"\nsend_at'
        ),
        MJML.replace("subscriber.first_name", "subscriber.shoe_size"),
    )
    result = run(app, "validate", str(bad))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}/campaign.toml:2:43: Jinja: unexpected '}}'",
        f"{bad}/campaign.toml:7:20: audience: expected a field such as lifetime_value, "
        "found end of expression",
        f"{bad}/email.mjml:5:23: 'dict object' has no attribute 'shoe_size'",
        f"{bad}: 3 error(s), 0 warning(s)",
    ]
    unclosed = write_campaign(tmp_path, toml, MJML.replace("</mj-section>", ""), slug="unclosed")
    result = run(app, "validate", str(unclosed))
    assert result.stderr.splitlines()[:2] == [
        f"{unclosed}/campaign.toml:5:11: send_at needs a UTC offset, e.g. 2030-01-07T10:00:00+00:00",
        f"{unclosed}/email.mjml:3:1: MJML: <mj-section> is never closed "
        "(unexpected end of stream in root template)",
    ]
    broken_toml = write_campaign(tmp_path, 'name = "x\n', MJML.replace("{% endblock %}", ""), slug="t")
    result = run(app, "validate", str(broken_toml))
    assert [line.split(": ")[0] for line in result.stderr.splitlines()] == [
        f"{broken_toml}/campaign.toml:1:10",
        f"{broken_toml}/email.mjml:2:1",  # the unclosed block, where it opens
        f"{broken_toml}",
    ]


@pytest.mark.parametrize(
    "toml, mjml",
    [
        ("\x00\x01\x02", MJML),
        ('name = [1, 2\nsubject = """', MJML),
        (TOML, "{% extends 'missing.mjml' %}"),
        (TOML, "{% include '../../../etc/passwd' %}"),
        (TOML, "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
        (TOML, "{% for x in range(10**9) %}{% endfor %}"),
        (TOML.replace("send_at", "[[wave]]\nsend_at"), MJML),
    ],
)
def test_a_broken_campaign_never_crashes_the_cli(app, tmp_path, toml, mjml):
    folder = write_campaign(tmp_path, toml, mjml)
    for args in (["validate", str(folder)], ["preview", str(folder), "--out", str(tmp_path / "o")]):
        result = run(app, *args)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)  # a message, not a traceback
        assert "Traceback" not in result.output


def test_an_unexpected_failure_is_that_folders_error(app, tmp_path, monkeypatch):
    from newsletter.campaigns import validation

    real = validation.validate_campaign

    def explode(folder, *args, **kwargs):
        if folder.name == "spring-sale":
            raise RuntimeError("disk on fire")
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(validation, "validate_campaign", explode)
    result = run(app, "validate", str(EXAMPLES / "spring-sale"), str(EXAMPLES / "monthly-newsletter"))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{EXAMPLES / 'spring-sale'}:1:1: cannot validate: RuntimeError: disk on fire",
        f"{EXAMPLES / 'spring-sale'}: 1 error(s), 0 warning(s)",
    ]
    assert result.stdout.splitlines() == [
        f"{EXAMPLES / 'monthly-newsletter'}: ok, 0 warning(s)",  # checked all the same
    ]


def test_validate_reports_an_undecodable_file_and_goes_on_to_the_next_folder(app, tmp_path):
    first = write_campaign(tmp_path, slug="a")
    latin = write_campaign(tmp_path, mjml=MJML.replace("Hello", "Bonjour, café"), slug="b")
    (latin / "email.mjml").write_bytes((latin / "email.mjml").read_text("utf-8").encode("latin-1"))
    last = write_campaign(tmp_path, TOML.replace('topic = "newsletter"', 'topic = "nope"'), slug="c")
    result = run(app, "validate", str(first), str(latin), str(last))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{latin}/email.mjml:5:26: not UTF-8 (byte 0xE9)",
        f"{latin}: 1 error(s), 0 warning(s)",
        f"{last}/campaign.toml:4:9: unknown topic 'nope' (known: newsletter, early-access, product-news)",
        f"{last}: 1 error(s), 0 warning(s)",
    ]
    assert result.stdout.splitlines() == [f"{first}: ok, 0 warning(s)"]


def test_validate_warns_when_base_url_is_not_https(app):
    result = run(
        app, "validate", str(EXAMPLES / "monthly-newsletter"), NEWSLETTER_BASE_URL="http://shop.example"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{EXAMPLES / 'monthly-newsletter'}: ok, 0 warning(s)"]
    assert result.stderr.splitlines() == [
        "warning: BASE_URL http://shop.example is not https: RFC 8058 wants an https List-Unsubscribe link; "
        "'campaign schedule' refuses it unless on loopback",
    ]


@pytest.mark.parametrize(
    "base_url, refused",
    [
        ("http://newsletter.test", True),
        ("http://10.0.0.1:5000", True),
        ("http://localhost.shop.example", True),
        ("https://newsletter.test", False),
        ("http://localhost:5000", False),
        ("http://127.0.0.2:8000", False),
        ("http://[::1]:8000", False),
    ],
)
def test_schedule_refuses_a_base_url_that_is_not_https_unless_on_loopback(make_app, base_url, refused):
    app = make_app(BASE_URL=base_url)
    runtime = app.extensions["newsletter"]
    folder = EXAMPLES / "monthly-newsletter"
    with runtime.sessions() as session:
        if refused:
            with pytest.raises(scheduling.ScheduleError) as error:
                scheduling.schedule(session, runtime.settings, folder)
            assert str(error.value) == (
                f"BASE_URL {base_url} is not https: RFC 8058 wants an https List-Unsubscribe link; "
                "set NEWSLETTER_BASE_URL to an https:// address (http: loopback)"
            )
            assert session.scalar(select(func.count()).select_from(Campaign)) == 0
        else:
            assert scheduling.schedule(session, runtime.settings, folder).slug == "monthly-newsletter"


def test_the_schedule_command_refuses_plain_http_in_one_line(app, runtime):
    result = run(
        app, "schedule", str(EXAMPLES / "monthly-newsletter"), NEWSLETTER_BASE_URL="http://shop.example"
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.splitlines() == [
        "Error: BASE_URL http://shop.example is not https: RFC 8058 wants an https List-Unsubscribe link; "
        "set NEWSLETTER_BASE_URL to an https:// address (http: loopback)"
    ]
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 0


def test_test_send_goes_through_smtp_with_the_test_prefix(app, smtp_sink):
    result = run(app, "test-send", str(EXAMPLES / "spring-sale"), "--to", "Marketer@Example.com")
    assert result.exit_code == 0, result.output
    raw = smtp_sink.take_raw()
    assert len(raw) == 4  # the two waves' emails differ, in English and German: one test each
    subjects = []
    for data in raw:
        assert_short_lines(data)
        message = email.message_from_bytes(data, policy=email.policy.default)
        subjects.append(message["Subject"])
        assert message["To"] == "Marketer@example.com"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["List-Unsubscribe"].startswith("<https://newsletter.test/unsubscribe/preview-")
        assert "/early-access/preview-" in message.get_body(("html",)).get_content()
    assert sorted(subjects) == [
        "[TEST] Early access to the spring sale for Alex",
        "[TEST] Early access to the spring sale for Alex",
        "[TEST] Früher Zugang zum Frühjahrsverkauf für Alex",
        "[TEST] Früher Zugang zum Frühjahrsverkauf für Alex",
    ]
    only_vip = run(
        app,
        "test-send",
        str(EXAMPLES / "spring-sale"),
        "--to",
        "m@example.com",
        "--wave",
        "vip",
        "--language",
        "en",
    )
    assert only_vip.exit_code == 0 and len(smtp_sink.take()) == 1


def test_test_send_refuses_an_invalid_campaign_or_address(app, smtp_sink, tmp_path):
    bad = write_campaign(tmp_path, TOML.replace("2030", "2020"))
    result = run(app, "test-send", str(bad), "--to", "m@example.com")
    assert result.exit_code == 1 and "send_at is in the past" in result.output
    result = run(app, "test-send", str(EXAMPLES / "monthly-newsletter"), "--to", "not an address")
    assert result.exit_code == 1 and "Error: 'not an address'" in result.output
    assert smtp_sink.pending() == 0


def test_preview_without_screenshots_writes_html_text_and_eml(app, tmp_path, make_subscriber):
    make_subscriber("zoe@example.com", topics=("early-access",), first_name="Zoë")
    out = tmp_path / "preview"
    result = run(
        app,
        "preview",
        str(EXAMPLES / "spring-sale"),
        "--subscriber",
        "zoe@example.com",
        "--out",
        str(out),
        "--no-screenshots",
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    # zoe chose no language: the store's default, English (no variant files)
    assert names == [f"spring-sale-{w}.{s}" for w in ("everyone", "vip") for s in ("eml", "html", "txt")]
    data = (out / "spring-sale-vip.eml").read_bytes()
    assert_short_lines(data)
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["To"] == "zoe@example.com"
    assert message["Subject"] == "Early access to the spring sale for Zoë"
    html = (out / "spring-sale-vip.html").read_text("utf-8")
    assert "Hello Zoë," in html and "https://newsletter.test/early-access/" in html
    assert "https://newsletter.test/unsubscribe/" in (out / "spring-sale-vip.txt").read_text("utf-8")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_preview_takes_screenshots_with_chromium(app, tmp_path):
    out = tmp_path / "preview"
    result = run(app, "preview", str(EXAMPLES / "monthly-newsletter"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert png_size(out / "monthly-newsletter-600.png")[0] == 600
    assert png_size(out / "monthly-newsletter-375.png")[0] == 375
    assert_short_lines((out / "monthly-newsletter.eml").read_bytes())


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_preview_screenshots_show_the_whole_email_footer_included(app, tmp_path, browser):
    tall = "".join(
        f"<mj-section><mj-column><mj-text>Paragraph {n}</mj-text>"
        '<mj-spacer height="120px" /></mj-column></mj-section>'
        for n in range(20)
    )
    folder = write_campaign(
        tmp_path, mjml=MJML.replace("<mj-section>", tall + "<mj-section>", 1), slug="tall"
    )
    out = tmp_path / "preview"
    result = run(app, "preview", str(folder), "--out", str(out))
    assert result.exit_code == 0, result.output
    for width in (600, 375):
        png_width, png_height = png_size(out / f"tall-{width}.png")
        # Playwright's own measure of the page at that width: the screenshot is exactly as tall
        page = browser.new_page(viewport={"width": width, "height": 100})
        page.goto((out / "tall.html").as_uri())
        height = page.evaluate("document.documentElement.scrollHeight")
        footer_bottom = page.evaluate(
            "[...document.querySelectorAll('div')].filter(d => d.textContent.includes('1 Example Street'))"
            ".map(d => d.getBoundingClientRect().bottom).pop() ?? 0"
        )
        page.close()
        assert png_width == width
        assert png_height == height > 1800  # the old fixed 1,800 px lost the footer
        assert 0 < footer_bottom <= png_height


def test_preview_says_so_in_one_line_when_chromium_is_missing(app, tmp_path):
    out = tmp_path / "preview"
    result = run(app, "preview", str(EXAMPLES / "monthly-newsletter"), "--out", str(out), PATH="/nonexistent")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: chromium is not installed (apt-get install chromium); no screenshots taken"
    ]
    assert (out / "monthly-newsletter.html").exists()  # everything else was written


def test_list_shows_draft_scheduled_and_invalid(app, runtime, tmp_path):
    import shutil

    for slug in ("spring-sale", "monthly-newsletter"):
        shutil.copytree(EXAMPLES / slug, tmp_path / slug)
    write_campaign(tmp_path, TOML.replace('topic = "newsletter"', 'topic = "x"'), slug="broken")
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, tmp_path / "monthly-newsletter")
        session.commit()
    result = run(app, "list", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["broken", "invalid"],
        ["monthly-newsletter", "scheduled"],
        ["spring-sale", "draft"],
    ]


def test_new_writes_a_starting_folder_that_validates_and_refuses_twice(app, tmp_path):
    result = run(app, "new", "winter-news", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "winter-news"
    assert sorted(p.name for p in folder.iterdir()) == ["campaign.toml", "email.mjml", "email.txt"]
    assert (folder / "campaign.toml").read_text("utf-8").startswith("# A campaign:")
    checked = run(app, "validate", str(folder))
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.splitlines() == [f"{folder}: ok, 0 warning(s)"] and checked.stderr == ""
    again = run(app, "new", "winter-news", "--dir", str(tmp_path))
    assert again.exit_code == 1
    assert again.stderr.splitlines() == [f"Error: {folder} already exists; choose another slug"]
    bad = run(app, "new", "Winter News", "--dir", str(tmp_path))
    assert bad.exit_code == 1 and len(bad.stderr.splitlines()) == 1
    assert "not a campaign slug" in bad.stderr and not (tmp_path / "Winter News").exists()
