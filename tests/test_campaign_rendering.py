"""Rendering once per campaign: snapshots of the examples, tokens that survive every step."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from newsletter.campaigns.rendering import inline_css, place_slots
from newsletter.campaigns.text import html_to_text
from newsletter.campaigns.validation import validate_campaign
from newsletter.mail.skeleton import SLOT, slot_token
from tests.campaign_helpers import EXAMPLES, MJML, NOW, SITE, TOML, write_campaign

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"


def check_snapshot(name: str, actual: str) -> None:
    """Compare with tests/snapshots/NAME; UPDATE_SNAPSHOTS=1 rewrites it after a deliberate change."""
    path = SNAPSHOTS / name
    if UPDATE:
        path.write_text(actual, "utf-8")
    assert path.exists(), f"no snapshot {path}: run with UPDATE_SNAPSHOTS=1 and review the diff"
    assert actual == path.read_text("utf-8"), f"{name} changed; UPDATE_SNAPSHOTS=1 after reviewing"


@pytest.mark.parametrize(
    "slug, waves", [("spring-sale", ["vip", "everyone"]), ("monthly-newsletter", [None])]
)
def test_snapshots_of_the_examples(slug, waves):
    report = validate_campaign(EXAMPLES / slug, SITE, NOW)
    assert report.ok, [str(p) for p in report.problems]
    assert list(report.emails) == waves
    for wave, email in report.emails.items():
        stem = slug + (f".{wave}" if wave else "")
        check_snapshot(f"{stem}.html", email.html)
        check_snapshot(f"{stem}.txt", f"Subject: {email.subject}\n\n{email.text}")
        check_snapshot(f"{stem}.slots.json", json.dumps(email.slots, indent=1, sort_keys=True) + "\n")


def test_slots_are_json_serialisable_and_come_back_as_tuples():
    report = validate_campaign(EXAMPLES / "spring-sale", SITE, NOW)
    slots = report.emails["vip"].slots
    frozen = json.loads(json.dumps({k: list(v) for k, v in slots.items()}))
    assert {k: tuple(v) for k, v in frozen.items()} == slots


def test_placeholders_in_href_survive_premailer():
    html = (
        "<html><head><style>a { color: red }</style></head><body>"
        f'<a href="{slot_token("unsubscribe_url")}">u</a>'
        f'<a href="https://shop.example/?e={slot_token("email")}&amp;x=1">e</a>'
        '<a href="{{ jinja }}">j</a>'
        "</body></html>"
    )
    inlined = inline_css(html)
    assert f'href="{slot_token("unsubscribe_url")}"' in inlined
    assert f"?e={slot_token('email')}&amp;x=1" in inlined
    assert "{{%20jinja%20}}" in inlined  # what premailer does to Jinja syntax: why tokens are URL-safe
    placed, slots = place_slots(inlined)
    assert slots == {
        slot_token("unsubscribe_url", "url"): ("unsubscribe_url", "url", ""),
        slot_token("email", "query"): ("email", "query", ""),
    }
    assert 'style="color:red"' in placed.replace("; ", ";").replace(": ", ":")


def test_every_link_of_the_examples_keeps_its_token_through_mjml_and_premailer():
    report = validate_campaign(EXAMPLES / "spring-sale", SITE, NOW)
    html = report.emails["vip"].html
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert slot_token("early_access_url", "url") in hrefs
    assert slot_token("unsubscribe_url", "url") in hrefs
    assert slot_token("preferences_url", "url") in hrefs
    assert "%7E" not in html and "{{" not in html
    assert len(re.findall("~NL~", html, re.I)) == len(SLOT.findall(html))


def test_fallbacks_for_empty_values(tmp_path):
    mjml = MJML.replace("{{ subscriber.first_name }}", "{{ subscriber.first_name or 'friend & co' }}")
    report = validate_campaign(write_campaign(tmp_path, mjml=mjml), SITE, NOW)
    assert report.ok, [str(p) for p in report.problems]
    email = report.emails[None]
    html_slots = [slot for slot in email.slots.values() if slot[1] == "html"]
    assert ("first_name", "html", "friend & co") in html_slots


def test_text_is_generated_from_html_with_links_and_without_hidden_parts():
    html = (
        "<html><head><title>T</title><style>p{}</style></head><body>"
        '<div style="display:none">preheader</div>'
        "<p>Hello&nbsp;<b>you</b>,<br>line two</p>"
        '<p><a href="https://a.example/x">Shop now</a> or <a href="https://b.example">https://b.example</a></p>'
        "</body></html>"
    )
    assert html_to_text(html) == (
        "Hello you,\nline two\n\nShop now (https://a.example/x) or https://b.example\n"
    )


def test_rendering_runs_once_per_distinct_email(tmp_path, monkeypatch):
    from newsletter.campaigns import rendering

    calls = []
    original = rendering.mjml2html
    monkeypatch.setattr(rendering, "mjml2html", lambda source: calls.append(1) or original(source))
    toml = TOML.replace("send_at = 2030-01-07T10:00:00+01:00\n", "")
    for name, day in (("a", 7), ("b", 8), ("c", 9)):
        toml += f'\n[[wave]]\nname = "{name}"\naudience = "all"\nsend_at = 2030-01-0{day}T10:00:00Z\n'
    report = validate_campaign(write_campaign(tmp_path, toml), SITE, NOW)
    assert report.ok and list(report.emails) == [None] and len(calls) == 1
