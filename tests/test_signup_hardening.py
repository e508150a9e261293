"""Issue 10, the subscriber's side: no stranger and no replayed link may undo an opt-out or
rewrite a person; names never carry line breaks; the daily cap counts mailboxes, not spellings.
Real HTTP form, Redis, RQ and SMTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from newsletter.models import ConsentEvent, OutboxEmail, Subscriber, Suppression
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import links
from tests.conftest import confirm_link, csrf_token
from tests.test_signup import ledger, path_of, subscriber


def actions(runtime, email: str) -> list[str]:
    return [e.action.value for e in ledger(runtime, subscriber(runtime, email).id)]


def topics_of(runtime, email: str) -> dict[str, str]:
    return {s.topic.slug: s.status.value for s in subscriber(runtime, email).subscriptions}


def suppression_of(runtime, email: str) -> str | None:
    with runtime.sessions() as session:
        entry = session.scalar(select(Suppression).where(Suppression.email_hash == address_hash(email)))
        return entry.reason.value if entry else None


def post_confirm(client, link: str):
    """Press the page's button; the CSRF token comes from the signup page (the same session)."""
    token = csrf_token(client.get("/subscribe").get_data(as_text=True))
    return client.post(path_of(link), data={"csrf_token": token})


def one_click_unsubscribe(app, runtime, email: str) -> None:
    with runtime.sessions() as session:
        person = session.scalar(select(Subscriber).where(Subscriber.email == email))
        url = links.unsubscribe_url(app.settings, person)
    response = app.test_client().post(path_of(url), data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200


# --- 3. an old confirmation link never undoes an unsubscribe ------------------------------------


def test_an_old_confirmation_link_cannot_undo_a_one_click_unsubscribe(
    app, client, signup, runtime, work, smtp_sink
):
    signup("ann@example.com", topics=["newsletter", "early-access"])
    work()
    old_link = confirm_link(smtp_sink.take()[0])
    assert "You are subscribed" in post_confirm(client, old_link).get_data(as_text=True)
    one_click_unsubscribe(app, runtime, "ann@example.com")
    assert suppression_of(runtime, "ann@example.com") == "unsubscribed"

    for response in (client.get(path_of(old_link)), post_confirm(client, old_link)):
        assert response.status_code == 410
        html = response.get_data(as_text=True)
        assert "This link is no longer valid" in html and 'href="/subscribe"' in html
    assert subscriber(runtime, "ann@example.com").status == "unsubscribed"
    assert set(topics_of(runtime, "ann@example.com").values()) == {"unsubscribed"}
    assert suppression_of(runtime, "ann@example.com") == "unsubscribed"
    assert actions(runtime, "ann@example.com") == ["signup_requested", "confirmed", "unsubscribed"]

    # A fresh signup gets a fresh link that works; the old one still does not.
    signup("ann@example.com", topics=["newsletter"])
    work()
    new_link = confirm_link(smtp_sink.take()[0])
    assert new_link != old_link
    assert post_confirm(client, old_link).status_code == 410
    assert subscriber(runtime, "ann@example.com").status == "unsubscribed"
    assert "You are subscribed" in post_confirm(client, new_link).get_data(as_text=True)
    assert subscriber(runtime, "ann@example.com").status == "active"
    assert topics_of(runtime, "ann@example.com") == {"newsletter": "active", "early-access": "unsubscribed"}
    assert suppression_of(runtime, "ann@example.com") is None
    assert actions(runtime, "ann@example.com")[-2:] == ["signup_requested", "confirmed"]


def test_an_expired_link_from_before_an_unsubscribe_gets_no_fresh_link(
    app, client, signup, runtime, work, smtp_sink
):
    from datetime import timedelta

    from newsletter.core import clock

    signup("ann@example.com")
    work()
    old_link = confirm_link(smtp_sink.take()[0])
    post_confirm(client, old_link)
    one_click_unsubscribe(app, runtime, "ann@example.com")
    clock.travel(timedelta(days=8))
    page = client.get(path_of(old_link))
    assert "This link has expired" in page.get_data(as_text=True)
    resent = client.post(
        f"{path_of(old_link)}/resend", data={"csrf_token": csrf_token(page.get_data(as_text=True))}
    )
    assert resent.status_code == 410 and "no longer valid" in resent.get_data(as_text=True)
    work()
    assert smtp_sink.take() == []
    assert subscriber(runtime, "ann@example.com").status == "unsubscribed"


# --- 6. a stranger's signup changes nothing stored about the person ------------------------------


def test_a_strangers_signup_of_a_pending_address_changes_nothing_until_confirmed(
    client, signup, runtime, work, smtp_sink
):
    signup("ann@example.com", topics=["newsletter"], first_name="Ann")
    signup("ann@example.com", topics=["newsletter", "early-access"], first_name="Mallory", ip="192.0.2.99")
    work()
    mails = smtp_sink.take()
    assert all("Mallory" not in m.get_body(("plain",)).get_content() for m in mails)
    own, strangers = (confirm_link(m) for m in mails)
    person = subscriber(runtime, "ann@example.com")
    assert person.first_name == "Ann" and topics_of(runtime, "ann@example.com") == {"newsletter": "pending"}

    # Ann confirms her own request: her name, her topics. The stranger's link is answered by it.
    post_confirm(client, own)
    person = subscriber(runtime, "ann@example.com")
    assert person.status == "active" and person.first_name == "Ann"
    assert topics_of(runtime, "ann@example.com") == {"newsletter": "active"}
    page = post_confirm(client, strangers)
    assert page.status_code == 200 and "Mallory" not in page.get_data(as_text=True)
    assert subscriber(runtime, "ann@example.com").first_name == "Ann"
    assert topics_of(runtime, "ann@example.com") == {"newsletter": "active"}
    assert actions(runtime, "ann@example.com") == ["signup_requested", "signup_requested", "confirmed"]

    # An active subscriber is not rewritten either.
    signup("ann@example.com", topics=["early-access"], first_name="Mallory", ip="192.0.2.99")
    work()
    welcome, notice = sorted(smtp_sink.take(), key=lambda m: "already subscribed" in m["Subject"])
    assert "Welcome" in welcome["Subject"] and "Hello Ann," in welcome.get_body(("plain",)).get_content()
    assert "already subscribed" in notice["Subject"] and "Mallory" not in notice.as_string()
    assert "Mallory" not in welcome.as_string()
    assert subscriber(runtime, "ann@example.com").first_name == "Ann"
    assert topics_of(runtime, "ann@example.com") == {"newsletter": "active"}


def test_a_strangers_signup_of_an_unsubscribed_address_changes_nothing(
    app, client, signup, runtime, work, smtp_sink
):
    signup("ann@example.com", first_name="Ann")
    work()
    post_confirm(client, confirm_link(smtp_sink.take()[0]))
    one_click_unsubscribe(app, runtime, "ann@example.com")

    signup("ann@example.com", topics=["early-access"], first_name="Mallory", ip="192.0.2.99")
    work()
    strangers = confirm_link(smtp_sink.take()[0])
    person = subscriber(runtime, "ann@example.com")
    assert person.status == "unsubscribed" and person.first_name == "Ann"
    assert topics_of(runtime, "ann@example.com") == {"newsletter": "unsubscribed"}

    # Ann comes back herself, with a new spelling of her name: her request is the one applied.
    signup("ann@example.com", topics=["newsletter"], first_name="Annie")
    work()
    own = confirm_link(smtp_sink.take()[0])
    assert subscriber(runtime, "ann@example.com").first_name == "Ann"
    post_confirm(client, own)
    person = subscriber(runtime, "ann@example.com")
    assert person.status == "active" and person.first_name == "Annie"
    assert topics_of(runtime, "ann@example.com") == {"newsletter": "active"}
    post_confirm(client, strangers)  # answered by Ann's own confirmation: nothing changes
    assert subscriber(runtime, "ann@example.com").first_name == "Annie"
    assert topics_of(runtime, "ann@example.com") == {"newsletter": "active"}


# --- 9. the daily confirmation cap counts mailboxes -------------------------------------------


def test_mailbox_key_ignores_case_tags_and_gmail_dots():
    from newsletter.mail.addresses import mailbox_hash, mailbox_key

    assert mailbox_key("Victim@Example.com") == "victim@example.com"
    assert (
        mailbox_key("victim+1@example.com")
        == mailbox_key("VICTIM+news+x@example.com")
        == "victim@example.com"
    )
    assert mailbox_key("vic.tim@example.com") == "vic.tim@example.com"  # dots matter elsewhere
    assert mailbox_key("V.i.c.t.i.m+2@gmail.com") == "victim@gmail.com"
    assert mailbox_key("vic.tim@googlemail.com") == "victim@gmail.com"
    assert mailbox_key("+only@example.com") == "+only@example.com"  # nothing left to strip to
    assert mailbox_hash("a.b+c@googlemail.com") == mailbox_hash("AB@gmail.com")


@pytest.mark.parametrize(
    "spellings",
    [
        [f"victim+{i}@example.com" for i in range(1, 6)] + ["Victim@Example.com"],
        ["victim@gmail.com", "v.ictim@gmail.com", "Vic.Tim+x@googlemail.com", "victim+2@GMAIL.com"],
    ],
    ids=["plus-tags", "gmail-dots"],
)
def test_plus_addresses_share_their_mailboxs_daily_cap(signup, runtime, work, smtp_sink, spellings):
    for i, address in enumerate(spellings):
        assert signup(address, ip=f"198.51.100.{i + 1}").status_code == 200
    work()
    assert len(smtp_sink.take()) == runtime.settings.confirmations_per_address == 3


def test_the_cap_counts_mailboxes_in_sql_when_redis_is_down(make_app, smtp_sink):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens there
    client = app.test_client()
    for i in range(1, 6):
        page = client.get("/subscribe").get_data(as_text=True)
        response = client.post(
            "/subscribe",
            data={
                "csrf_token": csrf_token(page),
                "email": f"victim+{i}@example.com",
                "topics": ["newsletter"],
            },
        )
        assert response.status_code == 200
    with app.extensions["newsletter"].sessions() as session:
        assert session.scalar(select(func.count(OutboxEmail.id))) == 3
        assert session.scalar(select(func.count(Subscriber.id))) == 5
        capped = session.scalars(
            select(ConsentEvent.details).where(ConsentEvent.action == "signup_requested")
        ).all()
    assert [d["email"] for d in capped].count("not sent: daily cap for this mailbox") == 2


# --- 2. names never carry a line break, a control character or a direction override -----------

#: U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR, U+0085 NEXT LINE (C1), U+202E RIGHT-TO-LEFT
#: OVERRIDE, U+2067 RIGHT-TO-LEFT ISOLATE: all passed the forms' old ASCII-only check.
REFUSED_NAMES = ["Ann\u2028Bcc: all@example.com", "Ann\u2029Lee", "Ann\u0085Lee", "Ann\u202eeeL", "\u2067Ann"]
FORM_MESSAGE = "Please write your first name on one line, without line breaks or special characters."


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_the_signup_form_refuses_unicode_line_breaks_in_a_name(signup, runtime, name):
    response = signup("eve@example.com", first_name=name)
    assert response.status_code == 400
    assert FORM_MESSAGE in response.get_data(as_text=True)
    assert subscriber(runtime, "eve@example.com") is None


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_the_preference_centre_refuses_unicode_line_breaks_in_a_name(
    app, client, runtime, make_subscriber, name
):
    from tests.test_preferences import post_preferences

    person = make_subscriber(first_name="Ann")
    url = links.preferences_url(app.settings, person)
    response = post_preferences(client, url, first_name=name)
    assert response.status_code == 400 and FORM_MESSAGE in response.get_data(as_text=True)
    assert subscriber(runtime, "ann@example.com").first_name == "Ann"
    # Joiners belong to names (Persian, Indic scripts) and emoji: they stay allowed.
    assert post_preferences(client, url, first_name="\u0645\u06cc\u200c\u0646\u0627").status_code == 200
    assert subscriber(runtime, "ann@example.com").first_name == "\u0645\u06cc\u200c\u0646\u0627"


def test_no_other_path_stores_such_a_name(app, runtime, make_subscriber, tmp_path, smtp_sink):
    """The services refuse them too: a caller that skips the forms, and the subscribers import."""
    from newsletter.subscribers import preferences, signup
    from newsletter.subscribers.consent import RequestInfo
    from newsletter.subscribers.names import InvalidName
    from tests.test_imports import run_import

    request = RequestInfo(None, None, "test")
    with runtime.sessions() as session:
        with pytest.raises(InvalidName):
            signup.request_signup(
                session,
                runtime.redis,
                app.settings,
                email="eve@example.com",
                first_name="Eve\u2028Bcc: all@example.com",
                topic_slugs=["newsletter"],
                wording=None,
                request=request,
                dispatch=lambda _id: None,
            )
        session.rollback()
        person = session.merge(make_subscriber(first_name="Ann"))
        wanted = preferences.current(person)
        wanted.first_name = "Ann\u0085Lee"
        with pytest.raises(InvalidName):
            preferences.update(session, person, wanted, request, {})
        session.rollback()
    assert subscriber(runtime, "eve@example.com") is None
    assert subscriber(runtime, "ann@example.com").first_name == "Ann"

    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        "email,first_name,topics,consented_at,consent_source\n"
        "bob@example.com,Bob\u2029Lee,newsletter,2025-01-01T00:00:00Z,popup\n"
        "cid@example.com,Cid,newsletter,2025-01-01T00:00:00Z,popup\n",
        "utf-8",
    )
    result = run_import(app, csv_file, "--source", "mailchimp")
    assert "line 2: first_name: contains a line break" in result.output, result.output
    assert subscriber(runtime, "bob@example.com") is None
    assert subscriber(runtime, "cid@example.com").status == "active"


def test_a_link_made_before_links_named_their_request_cannot_undo_an_opt_out(
    app, client, signup, runtime, work, smtp_sink
):
    from newsletter.subscribers.tokens import Purpose, make_token

    def legacy_link(email: str) -> str:
        with runtime.sessions() as session:
            person = session.scalar(select(Subscriber).where(Subscriber.email == email))
            token = make_token(app.settings, Purpose.CONFIRM, {"s": person.id, "h": person.email_hash[:16]})
        return f"http://newsletter.test/confirm/{token}"

    signup("bob@example.com")
    signup("ann@example.com")
    work()
    smtp_sink.take()
    # Still pending: an old link confirms the latest request, as before.
    assert "You are subscribed" in post_confirm(client, legacy_link("bob@example.com")).get_data(as_text=True)
    old = legacy_link("ann@example.com")
    post_confirm(client, old)
    one_click_unsubscribe(app, runtime, "ann@example.com")
    assert post_confirm(client, old).status_code == 410
    assert subscriber(runtime, "ann@example.com").status == "unsubscribed"
    assert suppression_of(runtime, "ann@example.com") == "unsubscribed"


def test_erasure_removes_the_names_of_unconfirmed_signups(app, signup, runtime, work, smtp_sink):
    from newsletter.models import SignupRequest
    from newsletter.subscribers.consent import RequestInfo
    from newsletter.subscribers.data_rights import erase, export_data

    signup("ann@example.com", first_name="Ann")
    signup("ann@example.com", first_name="Annie")
    work()
    assert len(smtp_sink.take()) == 2
    with runtime.sessions() as session:
        person = session.scalar(select(Subscriber))
        assert [r["first_name"] for r in export_data(session, person)["unconfirmed_signups"]] == ["Annie"]
        erase(session, person, RequestInfo(None, None, "test"))
        session.commit()
        assert session.scalar(select(func.count()).select_from(SignupRequest)) == 0
