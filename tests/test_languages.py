"""Languages: every string translated in every catalog, the committed .mo matching its .po, and
transactional mail rendered in the recipient's language (docs/languages.md)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from newsletter.core.languages import TRANSLATIONS, shipped_languages
from newsletter.mail.templates import render_transactional

ROOT = Path(__file__).resolve().parent.parent
TRANSLATED = [lang for lang in shipped_languages() if lang != "en"]


def test_german_and_french_are_shipped():
    assert {"de", "fr"} <= set(TRANSLATED)


def _key(msgid):
    """A plural entry's id is its singular and plural forms (a list or tuple): one hashable key."""
    return tuple(msgid) if isinstance(msgid, (list, tuple)) else msgid


def _complete(string, num_plurals: int) -> bool:
    """A translation with text in every form: a plural entry needs the language's number of forms."""
    if isinstance(string, (list, tuple)):
        return len(string) == num_plurals and all(string)
    return bool(string)


def test_a_plural_entry_missing_a_form_counts_as_untranslated():
    assert _complete(("1 Tag", "%(num)s Tage"), 2)
    assert not _complete(("1 jour", "%(num)s jours", ""), 3)
    assert not _complete(("1 jour", "%(num)s jours"), 3)
    assert not _complete("", 2)


@pytest.fixture(scope="module")
def fresh_extraction(tmp_path_factory):
    """The strings of the source as it is now (a new untranslated string fails below)."""
    out = tmp_path_factory.mktemp("pot") / "messages.pot"
    subprocess.run(
        [Path(sys.executable).parent / "pybabel", "extract", "-F", "babel.cfg", "-o", str(out), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with out.open("rb") as f:
        return {_key(m.id) for m in read_po(f) if m.id}


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_string_is_translated(lang, fresh_extraction):
    with (TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po").open("rb") as f:
        catalog = read_po(f)
    translated = {
        _key(m.id) for m in catalog if m.id and _complete(m.string, catalog.num_plurals) and not m.fuzzy
    }
    fuzzy = sorted((m.id for m in catalog if m.id and m.fuzzy), key=str)  # plural ids are tuples
    assert not fuzzy, f"{lang}: fuzzy entries (check and clear): {fuzzy}"
    missing = sorted(fresh_extraction - translated, key=str)
    assert not missing, f"{lang}: not translated (run make translations, then fill in): {missing}"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_committed_mo_matches_po(lang):
    """The .mo files are committed (a fresh clone and the wheel work without pybabel compile)."""
    folder = TRANSLATIONS / lang / "LC_MESSAGES"
    with (folder / "messages.po").open("rb") as f:
        po = {_key(m.id): _key(m.string) for m in read_po(f) if m.id}
    mo = {
        _key(m.id): _key(m.string) for m in read_mo(io.BytesIO((folder / "messages.mo").read_bytes())) if m.id
    }
    assert mo == po, f"{lang}: messages.mo is stale: run make translations"


CONFIRM = {
    "store": "Shop & Co",
    "postal_address": "1 Main St",
    "first_name": "<Ann>",
    "confirm_url": "https://example.test/confirm/x?a=1&b=2",
    "max_age_days": 7,
}


@pytest.mark.parametrize(
    ("lang", "subject", "phrase"),
    [
        ("en", "Please confirm your subscription to Shop & Co", "Confirm my subscription"),
        ("de", "Bitte bestätigen Sie Ihr Abonnement bei Shop & Co", "Mein Abonnement bestätigen"),
        ("fr", "Confirmez votre abonnement à Shop & Co", "Confirmer mon abonnement"),
    ],
)
def test_confirmation_email_in_the_language(lang, subject, phrase):
    got_subject, text, html = render_transactional("confirm", language=lang, **CONFIRM)
    assert got_subject == subject
    assert phrase in html
    assert "https://example.test/confirm/x?a=1&b=2" in text
    # newstyle gettext keeps autoescape: a value inside a translated string is escaped in HTML
    assert "&lt;Ann&gt;" in html and "<Ann>" not in html
    assert "Shop &amp; Co" in html
    assert f'<html lang="{lang}"' in html  # a screen reader reads it in its language


@pytest.mark.parametrize(("lang", "phrase"), [("de", "Willkommen bei den E-Mails von"), ("fr", "Bienvenue")])
def test_welcome_email_in_the_language(lang, phrase):
    subject, text, html = render_transactional(
        "welcome",
        language=lang,
        store="Shop",
        postal_address="x",
        first_name=None,
        topics=["News"],
        frequency="weekly",
        preferences_url="https://e.test/p",
        unsubscribe_url="https://e.test/u",
    )
    assert subject.startswith(phrase)
    assert "https://e.test/u" in html and "News" in text


def test_preference_centre_language_persists_and_drives_the_page(app, client, runtime, make_subscriber):
    from newsletter.models import Subscriber
    from newsletter.subscribers import links
    from tests.test_preferences import path, post_preferences

    sub = make_subscriber(topics=["newsletter"])
    url = links.preferences_url(app.settings, sub)
    page = client.get(path(url), headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert '<option selected value="fr">Français</option>' in page  # the browser's, offered
    assert ">Deutsch</option>" in page and ">English</option>" in page
    assert '<html lang="fr">' in page
    assert post_preferences(client, url, language="de").status_code == 200
    with runtime.sessions() as session:
        assert session.get(Subscriber, sub.id).language == "de"
    # the stored choice wins over the browser's
    again = client.get(path(url), headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert '<html lang="de"' in again or '<option selected value="de">' in again
