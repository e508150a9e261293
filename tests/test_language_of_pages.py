"""The signup keeps the page's language; the pages a signed link opens follow the subscriber's
stored language, else the browser's Accept-Language, else DEFAULT_LANGUAGE (docs/languages.md)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from newsletter.core.languages import translations
from newsletter.models import Subscriber
from newsletter.subscribers import links
from tests.conftest import confirm_link, csrf_token
from tests.test_consent_wording import sign_up


def stored_language(app, email: str) -> str | None:
    with app.extensions["newsletter"].sessions() as session:
        return session.scalar(select(Subscriber.language).where(Subscriber.email == email))


def lang_of(page: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', page)
    assert match, page[:200]
    return match.group(1)


# --- the signup keeps the language its page was shown in ---------------------------------------


@pytest.mark.parametrize(
    ("default", "accept", "expected"),
    [("en", "fr-CH, fr;q=0.9, en;q=0.5", "fr"), ("en", "de", "de"), ("de", None, "de"), ("fr", "ja", "fr")],
)
def test_the_signup_stores_the_language_of_its_page(default, accept, expected, make_app, work, smtp_sink):
    app = make_app(DEFAULT_LANGUAGE=default)
    page = sign_up(app.test_client(), "ann@example.com", accept)
    assert lang_of(page) == expected
    assert stored_language(app, "ann@example.com") == expected
    work()
    [mail] = smtp_sink.take()  # the confirmation goes in that language
    subject = translations(expected).gettext("Please confirm your subscription to %(store)s")
    assert mail["Subject"] == subject % {"store": "Our store"}


def test_a_signup_of_a_known_address_leaves_its_language_alone(make_app, work, smtp_sink):
    """Anyone can type an address into the form: a stranger's browser does not re-language the person."""
    app = make_app()
    client = app.test_client()
    sign_up(client, "ann@example.com", "fr")
    sign_up(client, "ann@example.com", "de")
    assert stored_language(app, "ann@example.com") == "fr"
    work()
    subjects = {m["Subject"] for m in smtp_sink.take()}
    assert subjects == {
        translations("fr").gettext("Please confirm your subscription to %(store)s") % {"store": "Our store"}
    }


# --- the pages a signed link opens -------------------------------------------------------------

#: stored choice, browser, store default -> the page's language: each one wins when those before are absent
FALLBACKS = [("fr", "en", "fr"), (None, "en", "en"), (None, None, "de")]


@pytest.fixture
def person(make_app, make_subscriber):
    """An app whose default is German, and a factory of subscribers with a stored language (or none)."""
    app = make_app(DEFAULT_LANGUAGE="de")

    def make(language: str | None, email: str = "ann@example.com", status: str = "active") -> Subscriber:
        subscriber = make_subscriber(email, status=status)
        with app.extensions["newsletter"].sessions() as session:
            session.get(Subscriber, subscriber.id).language = language
            session.commit()
            return session.get(Subscriber, subscriber.id)

    make.app = app
    return make


def path(url: str) -> str:
    return urlsplit(url).path


def headers(accept: str | None) -> dict[str, str]:
    return {"Accept-Language": accept} if accept else {}


def says(page: str, language: str, msgid: str) -> bool:
    """The page holds ``msgid`` as ``language``'s catalog writes it."""
    return translations(language).gettext(msgid) in page


@pytest.mark.parametrize(("stored", "accept", "expected"), FALLBACKS)
def test_the_confirm_page_and_its_answer(stored, accept, expected, person, work, smtp_sink):
    app = person.app
    client = app.test_client()
    sign_up(client, "ann@example.com", "de")
    with app.extensions["newsletter"].sessions() as session:  # then what the case needs on file
        session.scalar(select(Subscriber)).language = stored
        session.commit()
    work()
    [mail] = smtp_sink.take()
    link = path(confirm_link(mail))
    page = client.get(link, headers=headers(accept)).get_data(as_text=True)
    assert lang_of(page) == expected and says(page, expected, "Confirm your subscription")
    done = client.post(link, data={"csrf_token": csrf_token(page)}, headers=headers(accept))
    assert done.status_code == 200 and lang_of(done.get_data(as_text=True)) == expected


@pytest.mark.parametrize(("stored", "accept", "expected"), FALLBACKS)
def test_the_unsubscribe_page_and_its_answer(stored, accept, expected, person):
    ann = person(stored)
    url = path(links.unsubscribe_url(person.app.settings, ann))
    client = person.app.test_client()
    page = client.get(url, headers=headers(accept)).get_data(as_text=True)
    assert lang_of(page) == expected and says(page, expected, "Unsubscribe")
    done = client.post(
        url, data={"csrf_token": csrf_token(page), "scope": "everything"}, headers=headers(accept)
    ).get_data(as_text=True)
    assert lang_of(done) == expected and says(done, expected, "You are unsubscribed")


@pytest.mark.parametrize(("stored", "accept", "expected"), FALLBACKS)
def test_the_one_click_unsubscribe(stored, accept, expected, person):
    """RFC 8058: the mailbox provider's POST, no cookie, no CSRF token; the answer is still in the
    person's language (some providers show it)."""
    ann = person(stored)
    url = path(links.unsubscribe_url(person.app.settings, ann))
    answer = person.app.test_client().post(
        url, data={"List-Unsubscribe": "One-Click"}, headers=headers(accept)
    )
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200 and lang_of(page) == expected
    assert says(page, expected, "You are unsubscribed")


@pytest.mark.parametrize(("stored", "accept", "expected"), FALLBACKS)
def test_the_erase_page_and_its_answer(stored, accept, expected, person):
    ann = person(stored)
    url = path(links.preferences_url(person.app.settings, ann)) + "/erase"
    client = person.app.test_client()
    page = client.get(url, headers=headers(accept)).get_data(as_text=True)
    assert lang_of(page) == expected and says(page, expected, "Delete everything we hold about you")
    done = client.post(url, data={"csrf_token": csrf_token(page)}, headers=headers(accept))
    assert done.status_code == 200 and lang_of(done.get_data(as_text=True)) == expected


@pytest.mark.parametrize(("stored", "accept", "expected"), FALLBACKS)
def test_the_early_access_page(stored, accept, expected, person):
    ann = person(stored)
    url = path(links.early_access_url(person.app.settings, ann, 999))  # no such sale: the page says so
    answer = person.app.test_client().get(url, headers=headers(accept))
    page = answer.get_data(as_text=True)
    assert answer.status_code == 404 and lang_of(page) == expected
    assert says(page, expected, "This link is not for this sale")


def test_joining_from_an_order_invitation_keeps_the_page_language_and_its_wording(make_app, work, smtp_sink):
    from newsletter.models import ConsentAction, ConsentEvent
    from tests.test_consent_wording import sha256, shown
    from tests.test_order_invitation import TOKEN, join_path, order, thank_yous

    app = make_app(API_TOKEN=TOKEN, STORE_NAME="Bramble Books")
    [mail] = thank_yous(app, work, smtp_sink, order("o-1"))
    client = app.test_client()
    link = join_path(mail)
    page = client.get(link, headers=headers("fr")).get_data(as_text=True)
    text, version = shown(page, "consent-wording")
    assert lang_of(page) == "fr" and version == "signup-2026-11:fr" and text.startswith("Oui, Bramble Books")
    joined = client.post(
        link, data={"csrf_token": csrf_token(page), "topics": ["newsletter"]}, headers=headers("fr")
    )
    assert joined.status_code == 200
    assert stored_language(app, "ann@example.com") == "fr"
    with app.extensions["newsletter"].sessions() as session:
        event = session.scalar(
            select(ConsentEvent).where(ConsentEvent.action == ConsentAction.SIGNUP_REQUESTED)
        )
    assert (event.wording_version, event.wording_hash) == (version, sha256(text))
