"""Consent wording from versioned files per language: the page shows it, the ledger keeps the
version label (with its language) and the SHA-256 of the exact text shown (docs/languages.md)."""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter.core.config import ConfigError
from newsletter.core.languages import translations
from newsletter.models import ConsentAction, ConsentEvent, PartnerShare, Subscriber
from newsletter.partners import registry
from newsletter.subscribers import wording
from newsletter.subscribers.wording import SHIPPED, partner_wording
from tests.conftest import confirm_link, csrf_token

#: the hashes the ledger held before the wording moved into files (English, the shipped names)
SIGNUP_EN_OUR_STORE = "ef635f2eabe328077b98730d0be1903a94874a66cd34aba586800a076e5cd0ee"
PARTNER_EN_STORE_B = "c615fdaddadf1b029d842e4f4fc7ee12e1e2b007dd33ba1e32b71bf37df09867"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shown(page: str, element_id: str) -> tuple[str, str]:
    """The text and data-version of the element the page shows, as the browser reads it."""
    match = re.search(rf'id="{element_id}"[^>]*data-version="([^"]+)"[^>]*>([^<]+)<', page)
    assert match, f"no #{element_id} on the page"
    return html.unescape(match.group(2)), match.group(1)


def partner_label(page: str, pid: str) -> tuple[str, str]:
    match = re.search(rf'<label for="partner-{pid}" data-version="([^"]+)">([^<]+)</label>', page)
    assert match, f"no label for partner {pid}"
    return html.unescape(match.group(2)), match.group(1)


def sign_up(client, email: str, language: str | None, **extra):
    """GET the form and POST it as a browser asking for ``language`` would; returns the form page."""
    headers = {"Accept-Language": language} if language else {}
    page = client.get("/subscribe", headers=headers).get_data(as_text=True)
    response = client.post(
        "/subscribe",
        data={
            "csrf_token": csrf_token(page),
            "email": email,
            "topics": ["newsletter"],
            "website": "",
            **extra,
        },
        headers={**headers, "User-Agent": "pytest-browser/1.0"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return page


def request_event(runtime, email: str) -> tuple[Subscriber, ConsentEvent]:
    with runtime.sessions() as session:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email))
        event = session.scalar(
            select(ConsentEvent).where(
                ConsentEvent.subscriber_id == subscriber.id,
                ConsentEvent.action == ConsentAction.SIGNUP_REQUESTED,
            )
        )
        return subscriber, event


def test_english_keeps_the_hashes_it_had_in_code():
    """Moving the text into files changed no English evidence: old and new ledger rows agree."""
    signup = wording.current_wording(None, wording.SIGNUP, "en", "Our store")  # the shipped files alone
    assert (signup.version, signup.sha256) == ("signup-2026-11", SIGNUP_EN_OUR_STORE)
    share = partner_wording(None, "Store B", "en")
    assert (share.version, share.sha256) == ("partner-share-2026-11", PARTNER_EN_STORE_B)


@pytest.mark.parametrize(
    ("language", "version", "starts"),
    [
        ("en", "signup-2026-11", "Yes, Shop & Co may email me"),
        ("de", "signup-2026-11:de", "Ja, Shop & Co darf mir E-Mails"),
        ("fr", "signup-2026-11:fr", "Oui, Shop & Co peut m'envoyer"),
    ],
)
def test_signup_records_the_version_language_and_hash_of_the_text_shown(
    language, version, starts, make_app, work, smtp_sink
):
    app = make_app(STORE_NAME="Shop & Co")
    client = app.test_client()
    page = sign_up(client, "ann@example.com", language)
    text, page_version = shown(page, "consent-wording")
    assert text.startswith(starts) and page_version == version
    subscriber, event = request_event(app.extensions["newsletter"], "ann@example.com")
    assert event.wording_version == version
    assert event.wording_hash == sha256(text)  # the hash is of what the page showed, to the byte
    assert subscriber.language == language
    work()
    [mail] = smtp_sink.take()
    expected = translations(language).gettext("Please confirm your subscription to %(store)s")
    assert mail["Subject"] == expected % {"store": "Shop & Co"}


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, "utf-8")
    return folder


def test_a_store_file_wins_and_a_new_version_is_recorded_as_such(make_app, tmp_path):
    folder = write(
        tmp_path / "wording",
        {
            # a store's own re-wording of the shipped version: its file wins
            "signup/2026-11.en.txt": "Yes, {store} may write to me\n  about what I ticked.\n",
            # and a new version of the sharing text, current from now on
            "partner-share/current": "2027-01\n",
            **{
                f"partner-share/2027-01.{lang}.txt": f"[{lang}] Pass my address to {{partner}}."
                for lang in ("en", "de", "fr")
            },
        },
    )
    app = make_app(WORDING_DIR=str(folder), STORE_NAME="Shop")
    client = app.test_client()
    with app.extensions["newsletter"].sessions() as session:
        registry.add_partner(session, "pet-care", "Pet Care Co")
        session.commit()
    page = sign_up(client, "ann@example.com", "en", partners=["pet-care"])
    assert shown(page, "consent-wording") == (
        "Yes, Shop may write to me about what I ticked.",
        "signup-2026-11",
    )
    assert partner_label(page, "pet-care") == (
        "[en] Pass my address to Pet Care Co.",
        "partner-share-2027-01",
    )
    _, event = request_event(app.extensions["newsletter"], "ann@example.com")
    assert event.wording_hash == sha256("Yes, Shop may write to me about what I ticked.")
    # German still has the shipped signup text: only the files the store wrote are its own
    german = client.get("/subscribe", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert shown(german, "consent-wording")[0].startswith("Ja, Shop darf mir")


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        (
            {"signup/2026-11.en.txt": "Yes,\nmay {shop} write?"},
            "signup/2026-11.en.txt:2:5: unknown placeholder {shop}",
        ),
        ({"signup/2026-11.de.txt": b"Ja, \xff"}, "signup/2026-11.de.txt: not UTF-8 text"),
        ({"signup/2026-11.fr.txt": " \n "}, "signup/2026-11.fr.txt: empty"),
        (
            {"partner-share/2026-11.en.txt": "Share my address."},
            "partner-share/2026-11.en.txt: must name {partner}",
        ),
        ({"signup/2026-11.it.txt": "Sì"}, "signup/2026-11.it.txt: 'it' is not a shipped language"),
        ({"signup/notes.md": "x"}, "signup/notes.md: not a wording file"),
        ({"signup/current": "2027 01"}, "signup/current: expected one version name"),
        (
            {"signup/current": "2027-01", "signup/2027-01.en.txt": "Yes", "signup/2027-01.fr.txt": "Oui"},
            "signup/2027-01.de.txt: missing (current signup version)",
        ),
        ({"sign-up/2026-11.en.txt": "x"}, "sign-up: not a wording kind"),
    ],
)
def test_a_bad_or_missing_file_stops_the_start_in_one_line_naming_it(files, problem, make_app, tmp_path):
    folder = write(tmp_path / "wording", files)
    with pytest.raises(ConfigError) as raised:
        make_app(WORDING_DIR=str(folder))
    message = str(raised.value)
    assert message == f"{folder}/{problem}" or message.startswith(f"{folder}/{problem}")
    assert "\n" not in message


def test_a_wording_dir_that_does_not_exist_is_named(make_app, tmp_path):
    with pytest.raises(ConfigError, match=r"^NEWSLETTER_WORDING_DIR: no such folder"):
        make_app(WORDING_DIR=str(tmp_path / "nowhere"))


def test_the_shipped_files_are_complete():
    """Every kind has a current version in every shipped language, and the labels fit the column."""
    catalog = wording.load(SHIPPED)
    assert set(catalog.current) == set(wording.KINDS)
    assert max(len(wording.label(k, v, lang)) for k, v, lang in catalog.texts) <= 50


def test_sharing_consent_is_granted_in_the_german_wording_it_was_given_in(
    make_app, tmp_path, smtp_sink, work
):
    app = make_app()
    runtime = app.extensions["newsletter"]
    with runtime.sessions() as session:
        registry.add_partner(session, "pet-care", "Pet Care Co")
        session.commit()
    client = app.test_client()
    page = sign_up(client, "ann@example.com", "de", partners=["pet-care"])
    text, version = partner_label(page, "pet-care")
    assert text.startswith("Meine E-Mail-Adresse und meinen Vornamen an Pet Care Co weitergeben")
    assert version == "partner-share-2026-11:de"
    with runtime.sessions() as session:
        share = session.scalar(select(PartnerShare))
        assert (share.wording_version, share.wording_hash, share.granted) == (version, sha256(text), False)
    work()
    [mail] = smtp_sink.take()

    # The store publishes a new sharing text before Ann confirms: her grant is still the text she saw.
    folder = write(
        tmp_path / "later",
        {
            "partner-share/current": "2027-01",
            **{f"partner-share/2027-01.{lang}.txt": f"[{lang}] {{partner}}" for lang in ("en", "de", "fr")},
        },
    )
    later = make_app(WORDING_DIR=str(folder)).test_client()
    link = urlpath(confirm_link(mail))
    confirm_page = later.get(link).get_data(as_text=True)
    assert '<html lang="de"' in confirm_page  # Ann's language, stored at signup
    assert later.post(link, data={"csrf_token": csrf_token(confirm_page)}).status_code == 200
    with runtime.sessions() as session:
        share = session.scalar(select(PartnerShare))
        grant = session.scalar(
            select(ConsentEvent).where(ConsentEvent.action == ConsentAction.PARTNER_SHARE_GRANTED)
        )
    assert share.granted and share.wording_version == version and share.wording_hash == sha256(text)
    assert grant.wording_version == version and grant.wording_hash == sha256(text)
    assert grant.details["partner"] == "pet-care"


def test_a_share_whose_wording_file_is_gone_is_not_granted(make_app, smtp_sink, work):
    """A label no file holds any more cannot prove what the person read: no grant."""
    app = make_app()
    runtime = app.extensions["newsletter"]
    with runtime.sessions() as session:
        registry.add_partner(session, "pet-care", "Pet Care Co")
        session.commit()
    client = app.test_client()
    sign_up(client, "ann@example.com", "fr", partners=["pet-care"])
    with runtime.sessions() as session:
        share = session.scalar(select(PartnerShare))
        assert share.wording_version == "partner-share-2026-11:fr"
        session.execute(  # as if it had been requested under a version whose file was deleted
            PartnerShare.__table__.update().values(wording_version="partner-share-2019-01:fr")
        )
        session.commit()
    work()
    [mail] = smtp_sink.take()
    link = urlpath(confirm_link(mail))
    page = client.get(link).get_data(as_text=True)
    assert client.post(link, data={"csrf_token": csrf_token(page)}).status_code == 200
    with runtime.sessions() as session:
        assert session.scalar(select(PartnerShare)).granted is False
        actions = list(session.scalars(select(ConsentEvent.action).order_by(ConsentEvent.id)))
    assert actions == ["signup_requested", "confirmed"]


def urlpath(link: str) -> str:
    return "/" + link.split("/", 3)[3]
