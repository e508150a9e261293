"""The store's look: the override folder wins for pages and emails, the brand settings are checked
and reach the pages and the mail, and the From header names the store (docs/theming.md)."""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from newsletter.core.config import ConfigError, load_settings
from newsletter.mail.branding import contrast, sender, text_on
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
