"""The store's look: the override folder wins for pages and emails, the brand settings are checked
and reach the pages and the mail, and the From header names the store (docs/theming.md)."""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from newsletter.core.config import ConfigError, load_settings
from newsletter.mail.branding import contrast, sender, text_on
from newsletter.mail.templates import TEMPLATES
from tests.conftest import csrf_token


def settings_with(tmp_path, **environ):
    return load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": "k", **environ})


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "BRAND_COLOUR",
            "green",
            "NEWSLETTER_BRAND_COLOUR: expected a hex colour like #1a7f37 (got 'green')",
        ),
        (
            "HEADER_COLOUR",
            "#12345",
            "NEWSLETTER_HEADER_COLOUR: expected a hex colour like #1a7f37 (got '#12345')",
        ),
        (
            "BRAND_COLOUR",
            "#1a7f37;x",
            "NEWSLETTER_BRAND_COLOUR: expected a hex colour like #1a7f37 (got '#1a7f37;x')",
        ),
        (
            "LOGO_URL",
            "http://cdn.store.example/logo.png",
            "NEWSLETTER_LOGO_URL: expected an https:// URL (http:// only on loopback) "
            "(got 'http://cdn.store.example/logo.png')",
        ),
        ("LOGO_URL", "javascript:alert(1)", "NEWSLETTER_LOGO_URL: expected an https:// URL"),
        ("FROM", "Store", "NEWSLETTER_FROM: expected an address like news@store.example"),
        ("FROM", "a@b@c", "NEWSLETTER_FROM: expected an address like news@store.example"),
    ],
)
def test_bad_look_settings_are_one_line_errors(tmp_path, key, value, message):
    with pytest.raises(ConfigError) as caught:
        settings_with(tmp_path, **{f"NEWSLETTER_{key}": value})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_good_look_settings(tmp_path):
    settings = settings_with(
        tmp_path,
        NEWSLETTER_BRAND_COLOUR="#A3C",
        NEWSLETTER_LOGO_URL="https://cdn.store.example/logo.png",
    )
    assert settings.brand_colour == "#aa33cc"
    assert settings.overrides_dir == str(tmp_path / "overrides")  # the default; it may not exist
    assert settings_with(tmp_path, NEWSLETTER_LOGO_URL="http://127.0.0.1:8000/logo.png").logo_url
    with pytest.raises(ConfigError, match="^NEWSLETTER_OVERRIDES_DIR: no such folder"):
        settings_with(tmp_path, NEWSLETTER_OVERRIDES_DIR=str(tmp_path / "typo"))


def test_text_on_a_brand_colour_is_the_more_readable_of_black_and_white():
    assert text_on("#1a7f37") == "#ffffff" and text_on("#ffdd00") == "#1f2328"
    assert round(contrast("#000000", "#ffffff"), 1) == 21.0


def test_the_from_display_name_follows_the_store_name_unless_from_names_one():
    assert sender("news@shop.example", "Linen & Tea") == "Linen & Tea <news@shop.example>"  # & is atext
    assert sender("Shop Team <news@shop.example>", "Linen & Tea") == "Shop Team <news@shop.example>"
    assert sender("news@shop.example", "Café, Müller") == '"Café, Müller" <news@shop.example>'


def test_a_non_ascii_store_name_is_encoded_in_the_from_header(make_app, work, smtp_sink):
    app = make_app(STORE_NAME="Café Müller, Köln", FROM="news@cafe.example")
    client = app.test_client()
    page = client.get("/subscribe").get_data(as_text=True)
    client.post(
        "/subscribe",
        data={
            "csrf_token": csrf_token(page),
            "email": "ann@example.com",
            "topics": ["newsletter"],
            "website": "",
        },
    )
    work()
    [raw] = smtp_sink.take_raw()
    header = re.search(rb"^From: (.*(?:\r?\n[ \t].*)*)", raw, re.MULTILINE).group(1)
    assert header.isascii() and b"=?utf-8?" in header.lower()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["From"].addresses[0].display_name == "Café Müller, Köln"
    assert message["From"].addresses[0].addr_spec == "news@cafe.example"


@pytest.fixture
def overrides(tmp_path):
    folder = tmp_path / "overrides"
    (folder / "web").mkdir(parents=True)
    (folder / "email").mkdir()
    (folder / "web" / "check_inbox.html").write_text(
        '{% extends "web/base.html" %}{% block content %}<h1 id="ours">Nearly done, {{ store.name }}!</h1>'
        "{% endblock %}",
        "utf-8",
    )
    (folder / "email" / "confirm.txt").write_text(
        "Subject: One click for {{ store }}\n\nConfirm here: {{ confirm_url }}\n", "utf-8"
    )
    (folder / "email" / "transactional.mjml").write_text(
        '<mjml><mj-body><mj-section><mj-column><mj-text css-class="our-layout">{{ brand.name }}</mj-text>'
        "{% block content %}{% endblock %}</mj-column></mj-section></mj-body></mjml>",
        "utf-8",
    )
    return folder


def test_an_override_wins_for_a_page_and_an_email(make_app, work, smtp_sink, overrides):
    app = make_app(OVERRIDES_DIR=str(overrides), STORE_NAME="Bramble")
    client = app.test_client()
    page = client.get("/subscribe").get_data(as_text=True)
    answer = client.post(
        "/subscribe",
        data={
            "csrf_token": csrf_token(page),
            "email": "ann@example.com",
            "topics": ["newsletter"],
            "website": "",
        },
    )
    shown = (
        client.get(answer.headers["Location"]).get_data(as_text=True)
        if answer.status_code == 302
        else (answer.get_data(as_text=True))
    )
    assert '<h1 id="ours">Nearly done, Bramble!</h1>' in shown
    work()
    [mail] = smtp_sink.take()
    assert mail["Subject"] == "One click for Bramble"  # the overridden .txt
    html = mail.get_body(("html",)).get_content()
    assert "our-layout" in html and "Confirm my subscription" in html  # our layout, the shipped body


def test_an_override_of_the_base_layout_reaches_the_check_inbox_answer(make_app, tmp_path):
    """A layout override shows on the signup answer too, on every answer (fixed_pages)."""
    folder = tmp_path / "overrides"
    (folder / "web").mkdir(parents=True)
    shipped = (TEMPLATES / "web" / "base.html").read_text("utf-8")
    (folder / "web" / "base.html").write_text(shipped.replace("<main>", '<main id="our-layout">'), "utf-8")
    client = make_app(OVERRIDES_DIR=str(folder)).test_client()
    token = csrf_token(client.get("/subscribe").get_data(as_text=True))
    for n in range(2):
        form = {"csrf_token": token, "email": f"ann{n}@example.com", "topics": ["newsletter"], "website": ""}
        page = client.post("/subscribe", data=form).get_data(as_text=True)
        assert '<main id="our-layout">' in page and "Check your inbox" in page


def test_pages_carry_the_brand(make_app):
    app = make_app(
        LOGO_URL="https://cdn.store.example/logo.png",
        BRAND_COLOUR="#7b2d8b",
        HEADER_COLOUR="#222222",
        STORE_NAME="Linen & Tea",
    )
    answer = app.test_client().get("/subscribe")
    html = answer.get_data(as_text=True)
    assert "--brand: #7b2d8b;" in html and "--on-brand: #ffffff;" in html and "--header: #222222;" in html
    assert '<img src="https://cdn.store.example/logo.png" alt="Linen &amp; Tea">' in html
    assert answer.headers["Content-Security-Policy"].endswith("; img-src https://cdn.store.example")
    plain = make_app().test_client().get("/subscribe")
    assert "img-src" not in plain.headers["Content-Security-Policy"]
    assert 'class="brand" href="/subscribe">Our store</a>' in plain.get_data(as_text=True)


def test_an_override_of_the_email_base_layout_reaches_a_campaign(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    """OVERRIDES_DIR/email/base.mjml is the layout every campaign extends: a sent campaign carries it."""
    from datetime import timedelta

    from newsletter.campaigns import scheduling
    from newsletter.core import clock
    from newsletter.mail.templates import email_folder
    from tests.sending_helpers import now_floor, run_engine, write_campaign

    overrides = tmp_path / "overrides"
    (overrides / "email").mkdir(parents=True)
    shipped = (email_folder() / "base.mjml").read_text("utf-8")
    marked = re.sub(
        r"(<mj-body[^>]*>)",
        r'\1<mj-section><mj-column><mj-text css-class="our-base">'
        r"Our own layout</mj-text></mj-column></mj-section>",
        shipped,
        count=1,
    )
    assert marked != shipped
    (overrides / "email" / "base.mjml").write_text(marked, "utf-8")
    app = make_app(OVERRIDES_DIR=str(overrides), MARKETING_CAPS="", QUIET_HOURS="")
    runtime = app.extensions["newsletter"]
    make_subscriber("ann@example.com", topics=("newsletter",), first_name="Ann")
    send_at = now_floor() + timedelta(minutes=5)
    folder = write_campaign(tmp_path / "campaigns", waves=[("all", "all", send_at)], topic="newsletter")
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()
    clock.travel(send_at - clock.now() + timedelta(seconds=1))
    run_engine(runtime, work)
    [mail] = smtp_sink.take()
    html = mail.get_body(("html",)).get_content()
    assert "our-base" in html and "Our own layout" in html
    # the campaign's own content is still there, inside the store's layout
    assert "Ann" in html


def test_an_override_file_that_replaces_nothing_is_warned_about(tmp_path, caplog):
    from newsletter.mail.templates import unmatched_overrides

    overrides = tmp_path / "overrides"
    (overrides / "web").mkdir(parents=True)
    (overrides / "email").mkdir()
    (overrides / "web" / "subscribe.html").write_text("{% extends 'web/base.html' %}", "utf-8")
    (overrides / "web" / "subscibe.html").write_text("misspelt", "utf-8")  # replaces nothing
    (overrides / "email" / "base.mjml").write_text("<mjml></mjml>", "utf-8")
    (overrides / "logo.png").write_bytes(b"\x89PNG")  # outside web/ and email/
    problems = unmatched_overrides(str(overrides))
    assert len(problems) == 2
    assert "logo.png replaces no shipped template" in problems[0]  # sorted by path
    assert "web/subscibe.html replaces no shipped template" in problems[1]
    assert unmatched_overrides(str(tmp_path / "none")) == []

    from newsletter import create_app

    with caplog.at_level("WARNING", logger="newsletter.web.theme"):
        create_app(
            {
                "SECRET_KEY": "k" * 32,
                "OVERRIDES_DIR": str(overrides),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            }
        )
    warned = [r.getMessage() for r in caplog.records if r.name == "newsletter.web.theme"]
    assert len(warned) == 2 and all(line.startswith("OVERRIDES_DIR: ") for line in warned)
