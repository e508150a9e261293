"""German and French pages in a real headless Chromium: the browser's language picks the signup
page's, a subscriber's stored choice picks the preference centre's, and ``<html lang>`` says which
(screenshots: tests/artifacts/languages-*.png; docs/images/languages-*.png are copies of them)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from newsletter.core.languages import translations
from newsletter.models import Subscriber
from newsletter.subscribers import links
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("lang, locale", [("de", "de-DE"), ("fr", "fr-FR")])
def test_signup_and_preferences_in_german_and_french(browser, serve, make_subscriber, runtime, lang, locale):
    app, base_url = serve(STORE_NAME="Linen & Tea")
    subscriber = make_subscriber()
    with runtime.sessions() as session:  # the stored choice: the browser below asks for English
        session.execute(update(Subscriber).where(Subscriber.id == subscriber.id).values(language=lang))
        session.commit()
    with app.app_context():
        preferences = links.preferences_url(app.settings, subscriber)
    catalog = translations(lang)
    ARTIFACTS.mkdir(exist_ok=True)

    context = browser.new_context(viewport={"width": 390, "height": 900}, locale=locale)
    try:
        page = context.new_page()
        page.goto(f"{base_url}/subscribe")
        assert page.get_attribute("html", "lang") == lang
        button = page.inner_text("button[type=submit]").strip()
        assert button == catalog.gettext("Subscribe") != "Subscribe"
        page.screenshot(path=str(ARTIFACTS / f"languages-signup-{lang}.png"), full_page=True)
    finally:
        context.close()

    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    try:
        page = context.new_page()
        page.goto(preferences)
        assert page.get_attribute("html", "lang") == lang  # stored choice over Accept-Language
        assert page.input_value("select[name=language]") == lang
        page.screenshot(path=str(ARTIFACTS / f"languages-preferences-{lang}.png"), full_page=True)
    finally:
        context.close()


def test_an_english_browser_gets_the_english_page(browser, serve):
    _, base_url = serve()
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.goto(f"{base_url}/subscribe")
        assert page.get_attribute("html", "lang") == "en"
        assert page.inner_text("button[type=submit]").strip() == "Subscribe"
    finally:
        context.close()
