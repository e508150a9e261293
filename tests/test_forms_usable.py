"""Forms people can use: errors tied to their fields, grouped choices, the time zone, ways onward
and back, and "send me my links" (the same answer whatever the address's state)."""

from __future__ import annotations

import re

import pytest

from newsletter.models import Subscriber, SubscriberStatus, SuppressionReason
from newsletter.subscribers import links, suppression, time_zones
from newsletter.subscribers.consent import RequestInfo
from newsletter.subscribers.data_rights import erase
from tests.conftest import confirm_link, csrf_token


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def tag(html: str, element_id: str) -> str:
    match = re.search(rf'<[a-z]+\b[^>]*\bid="{re.escape(element_id)}"[^>]*>', html)
    assert match, f"no element #{element_id}"
    return match.group(0)


# --- every error at once, each tied to its field -------------------------------------------------


def test_every_error_shows_at_once_tied_to_its_field_with_a_summary(signup):
    response = signup("", topics=(), first_name="two\nlines")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    email = tag(html, "email")
    assert 'aria-invalid="true"' in email and 'aria-describedby="email-error"' in email
    assert "Please enter your email address." in re.search(r'id="email-error".*?</div>', html, re.S).group(0)
    name = tag(html, "first_name")
    assert 'aria-invalid="true"' in name and 'aria-describedby="first_name-error"' in name
    box = tag(html, "topic-newsletter")
    assert 'aria-invalid="true"' in box and 'aria-describedby="topics-error"' in box
    assert "Please choose at least one topic." in re.search(r'id="topics-error".*?</div>', html, re.S).group(
        0
    )
    summary = re.search(r'<div class="error-summary".*?</div>', html, re.S).group(0)
    assert 'role="alert"' in summary
    assert re.findall(r'href="#([^"]+)"', summary) == ["email", "first_name", "topic-newsletter"]
    assert "<title>Error: " in html


def test_a_valid_form_has_no_error_marks(client):
    html = client.get("/subscribe").get_data(as_text=True)
    assert "aria-invalid" not in html and "error-summary" not in html


# --- choices grouped ------------------------------------------------------------------------------


def test_radio_groups_sit_in_a_fieldset_with_a_legend(client, make_subscriber, app):
    pat = make_subscriber("pat@example.com")
    html = client.get(path_of(links.preferences_url(app.settings, pat))).get_data(as_text=True)
    group = re.search(r'<fieldset id="frequency".*?</fieldset>', html, re.S).group(0)
    assert "<legend>How often may we write?</legend>" in group and group.count('type="radio"') == 3
    html = client.get(path_of(links.unsubscribe_url(app.settings, pat, topic="newsletter"))).get_data(True)
    group = re.search(r"<fieldset>.*?</fieldset>", html, re.S).group(0)
    assert "<legend>Unsubscribe from</legend>" in group and group.count('type="radio"') == 2
    # every select of the preference centre has its label
    html = client.get(path_of(links.preferences_url(app.settings, pat))).get_data(as_text=True)
    selects = re.findall(r'<select[^>]*id="([^"]+)"', html)
    assert selects == ["pause", "time_zone", "language"] and all(f'for="{s}"' in html for s in selects)


# --- the time zone ----------------------------------------------------------------------------------


def zone_options(html: str) -> list[str]:
    select = re.search(r'<select[^>]*id="time_zone".*?</select>', html, re.S).group(0)
    return re.findall(r'<option[^>]*value="([^"]*)"', select)


def test_time_zones_common_first_no_factory_and_the_browser_script(client, make_subscriber, app, runtime):
    pat = make_subscriber("pat@example.com")
    html = client.get(path_of(links.preferences_url(app.settings, pat))).get_data(as_text=True)
    zones = zone_options(html)
    assert zones[: len(time_zones.COMMON)] == list(time_zones.COMMON)
    rest = zones[len(time_zones.COMMON) :]
    assert rest == sorted(rest) and "Europe/Berlin" not in rest and "Pacific/Chatham" in rest
    assert len(zones) == len(set(zones))
    for junk in ("Factory", "localtime", "posixrules", "Etc/GMT+5", "US/Eastern", "EST5EDT"):
        assert junk not in zones
    assert "<optgroup" in html
    # never chosen: the script starts from the browser's zone; it is a file, allowed by the CSP
    assert "data-start-from-browser" in tag(html, "time_zone")
    script = re.search(r'<script src="([^"]+)" defer></script>', html).group(1)
    assert "<script>" not in html and "<script " not in html.replace(f'<script src="{script}"', "")
    served = client.get(script)
    assert served.status_code == 200 and served.mimetype == "text/javascript"
    assert b"resolvedOptions().timeZone" in served.data
    served.close()
    csp = client.get(path_of(links.preferences_url(app.settings, pat))).headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "script-src" not in client.get("/subscribe").headers["Content-Security-Policy"]  # no script there

    # chosen once: the page shows that choice, no guess; a legacy zone on file stays selectable
    with runtime.sessions() as session:
        session.get(Subscriber, pat.id).time_zone = "US/Eastern"
        session.commit()
    html = client.get(path_of(links.preferences_url(app.settings, pat))).get_data(as_text=True)
    assert "data-start-from-browser" not in tag(html, "time_zone")
    assert zone_options(html)[0] == "US/Eastern"
    assert re.search(r'<option selected value="US/Eastern">', html)


def test_a_zone_we_do_not_offer_is_refused_with_its_error_tied_to_the_select(client, make_subscriber, app):
    pat = make_subscriber("pat@example.com")
    path = path_of(links.preferences_url(app.settings, pat))
    html = client.get(path).get_data(as_text=True)
    response = client.post(
        path,
        data={
            "csrf_token": csrf_token(html),
            "topics": ["newsletter"],
            "frequency": "any",
            "time_zone": "Factory",
        },
    )
    assert response.status_code == 400
    assert 'aria-describedby="time_zone-error"' in tag(response.get_data(as_text=True), "time_zone")


# --- onward and back --------------------------------------------------------------------------------


def test_the_confirmed_page_leads_to_a_working_preference_centre(client, signup, work, smtp_sink):
    signup("ann@example.com")
    work()
    [mail] = smtp_sink.take()
    path = path_of(confirm_link(mail))
    page = client.get(path).get_data(as_text=True)
    confirmed = client.post(path, data={"csrf_token": csrf_token(page)}).get_data(as_text=True)
    link = re.search(r'<a href="([^"]+)" id="preferences">', confirmed).group(1)
    centre = client.get(path_of(link))
    assert centre.status_code == 200 and "Your preferences" in centre.get_data(as_text=True)
    assert re.search(r'value="newsletter"\s+checked', centre.get_data(as_text=True))


def test_the_erase_page_has_a_way_back(client, make_subscriber, app, runtime):
    pat = make_subscriber("pat@example.com")
    prefs = path_of(links.preferences_url(app.settings, pat))
    html = client.get(prefs + "/erase").get_data(as_text=True)
    back = re.search(r'<a href="([^"]+)" id="keep">', html).group(1)
    assert back == prefs and client.get(back).status_code == 200
    with runtime.sessions() as session:
        assert session.get(Subscriber, pat.id).status == SubscriberStatus.ACTIVE  # looking erased nothing


# --- send me my links -------------------------------------------------------------------------------


def ask_links(client, email: str, ip: str = "198.51.100.9"):
    html = client.get("/links").get_data(as_text=True)
    return client.post(
        "/links", data={"csrf_token": csrf_token(html), "email": email}, environ_base={"REMOTE_ADDR": ip}
    )


def answer(response) -> str:
    return re.sub(r'nonce="[^"]+"', "", response.get_data(as_text=True))


@pytest.fixture
def people(make_subscriber, runtime):
    """One address in each state the form may meet (unknown: nobody@)."""
    make_subscriber("pending@example.com", status=SubscriberStatus.PENDING)
    make_subscriber("active@example.com")
    make_subscriber("left@example.com", status=SubscriberStatus.UNSUBSCRIBED)
    blocked = make_subscriber("blocked@example.com")
    gone = make_subscriber("gone@example.com")
    with runtime.sessions() as session:
        suppression.suppress(session, blocked.email_hash, SuppressionReason.COMPLAINED, "test")
        erase(session, session.get(Subscriber, gone.id), RequestInfo(None, None, "test"))
        session.commit()


def test_send_my_links_answers_the_same_and_mails_only_whom_we_may(client, people, work, smtp_sink, app):
    states = ["nobody", "pending", "active", "left", "blocked", "gone"]
    answers = {}
    for i, who in enumerate(states):
        response = ask_links(client, f"{who}@example.com", ip=f"198.51.100.{i}")
        assert response.status_code == 200
        answers[who] = answer(response)
    assert len(set(answers.values())) == 1 and 'id="links-sent"' in answers["nobody"]
    work()
    mails = {m["To"]: m for m in smtp_sink.take()}
    assert sorted(mails) == ["active@example.com", "left@example.com", "pending@example.com"]
    body = mails["left@example.com"].get_body(("plain",)).get_content()
    centre = client.get(path_of(re.search(r"(https?://\S+/preferences/\S+)", body).group(1)))
    assert centre.status_code == 200 and "You are unsubscribed from everything" in centre.get_data(True)


def test_send_my_links_is_limited_like_signup(make_app, make_subscriber, work, smtp_sink):
    app = make_app(SIGNUP_RATE_LIMIT="3/60", CONFIRMATIONS_PER_ADDRESS=1)
    client = app.test_client()
    with app.extensions["newsletter"].sessions() as session:
        from newsletter.models.subscribers import address_hash

        session.add(
            Subscriber(email="ann@example.com", email_hash=address_hash("ann@example.com"), status="active")
        )
        session.commit()
    first, second = ask_links(client, "ann@example.com"), ask_links(client, "ann+again@example.com")
    assert first.status_code == second.status_code == 200 and answer(first) == answer(second)
    work()
    assert len(smtp_sink.take()) == 1  # the mailbox's daily cap: one such email, whatever the spelling
    assert ask_links(client, "nobody@example.com").status_code == 200
    refused = ask_links(client, "ann@example.com")
    assert refused.status_code == 429 and "Too many requests" in refused.get_data(as_text=True)
    assert ask_links(client, "ann@example.com", ip="192.0.2.1").status_code == 200  # another network


def test_send_my_links_shows_its_error_on_the_field(client):
    response = ask_links(client, "not an address")
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and 'aria-invalid="true"' in tag(html, "email")
    assert re.findall(r'class="error-summary".*?href="#([^"]+)"', html, re.S) == ["email"]


@pytest.mark.browser
def test_the_time_zone_starts_from_the_browsers_under_the_csp(browser, serve, make_subscriber, runtime):
    app, _ = serve()
    new, chose = make_subscriber("new@example.com"), make_subscriber("chose@example.com")
    with app.extensions["newsletter"].sessions() as session:
        session.get(Subscriber, chose.id).time_zone = "Asia/Tokyo"
        session.commit()
    context = browser.new_context(timezone_id="Europe/Berlin")
    page = context.new_page()
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(links.preferences_url(app.settings, new))
    page.wait_for_selector("#time_zone[data-from-browser]", state="attached")
    assert page.input_value("#time_zone") == "Europe/Berlin"
    assert page.is_visible("#time_zone-hint")
    page.click("#save")
    page.wait_for_selector("text=Saved.")
    with app.extensions["newsletter"].sessions() as session:
        assert session.get(Subscriber, new.id).time_zone == "Europe/Berlin"
    page.goto(links.preferences_url(app.settings, chose))
    assert page.input_value("#time_zone") == "Asia/Tokyo" and not page.is_visible("#time_zone-hint")
    context.close()
    assert not refused, refused
