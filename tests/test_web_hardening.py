"""The HTTP edge: strangers refused before their body is read, bad input gets a 4xx, browser protections."""

from __future__ import annotations

import json
import re
import socket
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from newsletter.core import clock
from newsletter.partners import registry
from newsletter.partners.signing import request_headers
from newsletter.subscribers import links
from tests.conftest import csrf_token
from tests.test_partners import contact, signed_file

SECRET = "pair-secret-" + "s" * 40
API_TOKEN = "hardening-token-" + "t" * 20
CONTACTS = "/api/partners/store-a/contacts"


# --- the partner API reads nothing from a stranger ------------------------------------------------


@pytest.fixture
def partner_server(serve):
    """A real server on loopback (store-b) that knows store-a."""
    app, base_url = serve(STORE_ID="store-b", PARTNER_MAX_BODY_MB=2)
    with app.extensions["newsletter"].sessions() as session:
        registry.add_partner(session, "store-a", "Store A", SECRET)
        session.commit()
    registry.clear_cache()
    return app, urlsplit(base_url)


def raw_request(address, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    """Send the request line, ``headers`` and ``body`` (maybe less than announced), then read the answer.

    The answer has to come while the announced body is still missing: a server that waits for
    it would keep us reading until the (generous) timeout, and the test fails instead of hanging.
    """
    lines = [f"POST {path} HTTP/1.1", f"Host: {address.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((address.hostname, address.port), timeout=60) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {received!r}"
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in the middle of the answer"
            rest += chunk
    return status, json.loads(rest[:length])


def test_partner_api_refuses_strangers_before_reading_their_body(partner_server, tmp_path):
    _, address = partner_server
    gigabyte = {"Content-Length": str(1024**3), "Content-Type": "application/x-ndjson"}

    # Unknown partner, well-formed headers: refused like a bad signature, nothing read.
    stranger = request_headers("x" * 40, "POST", "/api/partners/nobody/contacts", b"")
    assert raw_request(address, "/api/partners/nobody/contacts", {**stranger, **gigabyte}) == (
        401,
        {"error": "bad signature"},
    )
    # A NUL byte in the id never reaches the database.
    assert raw_request(address, "/api/partners/store%00a/contacts", {**stranger, **gigabyte})[0] == 401
    # Known partner, stale timestamp, or no signature at all.
    stale = request_headers(SECRET, "POST", CONTACTS, b"")
    clock.travel(timedelta(minutes=6))
    status, answer = raw_request(address, CONTACTS, {**stale, **gigabyte})
    assert status == 401 and "outside the 300-second window" in answer["error"]
    clock.reset()
    unsigned = {
        k: v for k, v in request_headers(SECRET, "POST", CONTACTS, b"").items() if "Signature" not in k
    }
    status, answer = raw_request(address, CONTACTS, {**unsigned, **gigabyte})
    assert status == 401 and "X-Partner-Signature" in answer["error"]
    # A genuine partner still has to say how much it sends, and stay under the setting (2 MiB here).
    status, answer = raw_request(
        address, CONTACTS, {**request_headers(SECRET, "POST", CONTACTS, b""), "Transfer-Encoding": "chunked"}
    )
    assert status == 411 and "Content-Length" in answer["error"]
    status, answer = raw_request(
        address, CONTACTS, {**request_headers(SECRET, "POST", CONTACTS, b""), **gigabyte}
    )
    assert status == 413 and "2 MiB" in answer["error"]

    # A good request over the same real server still imports.
    body = signed_file(tmp_path, [contact("ann@example.com")]).read_bytes()
    headers = {
        **request_headers(SECRET, "POST", CONTACTS, body),
        "Content-Length": str(len(body)),
        "Content-Type": "application/x-ndjson",
    }
    status, answer = raw_request(address, CONTACTS, headers, body)
    assert status == 200 and answer["invited"] == 1


def test_partner_body_limit_is_a_setting(make_app):
    from newsletter.core.config import ConfigError

    assert make_app().settings.partner_max_body_mb == 64
    with pytest.raises(ConfigError, match="PARTNER_MAX_BODY_MB"):
        make_app(PARTNER_MAX_BODY_MB="0")


# --- bad input gets a 4xx ---------------------------------------------------------------------------


def test_nul_byte_in_a_partner_id_is_a_401_not_a_database_error(make_app):
    app = make_app(STORE_ID="store-b")
    path = "/api/partners/store\x00a/export"
    response = app.test_client().get(
        "/api/partners/store%00a/export", headers=request_headers(SECRET, "GET", path)
    )
    assert response.status_code == 401 and response.get_json() == {"error": "bad signature"}


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000])
def test_deeply_nested_json_is_a_400(make_app, body):
    app = make_app(API_TOKEN=API_TOKEN)
    response = app.test_client().post(
        "/api/customers", data=body, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert response.status_code == 400 and "nests too deeply" in response.get_json()["error"]


@pytest.mark.parametrize("record", [{"tier": "gold\x00"}, {"note": "a\x00b"}, {"attributes": {"x": "\x00"}}])
def test_nul_bytes_in_customer_records_are_per_record_errors(make_app, record):
    app = make_app(API_TOKEN=API_TOKEN)
    records = [{"email": "ann@example.com", **record}, {"email": "bob@example.com", "tier": "gold"}]
    response = app.test_client().post(
        "/api/customers", json=records, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert report["applied"] == 1 and report["rejected"] == 1
    assert report["errors"][0]["index"] == 0 and "contains a NUL byte" in report["errors"][0]["reason"]


def wsgi(app, path: str, **kwargs) -> tuple[int, dict, str]:
    """Straight to the WSGI app: the test client itself cannot send some of these requests."""
    environ = EnvironBuilder(path=path, **kwargs).get_environ()
    body, status, headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), dict(headers), b"".join(body).decode()


@pytest.mark.parametrize("host", ["a..b", "x" * 300, "."])
def test_a_malformed_host_gets_the_friendly_page(make_app, host):
    app = make_app()
    for path in ("/subscribe", "/nowhere"):
        status, _, page = wsgi(app, path, headers={"Host": host})
        assert status == 400 and "Bad Request" in page and 'href="/subscribe"' in page


def test_a_nameless_multipart_field_is_a_400(make_app):
    app = make_app()
    body = b'--b\r\nContent-Disposition: form-data; name="\r\n\r\nx\r\n--b--\r\n'
    status, _, page = wsgi(
        app, "/subscribe", method="POST", data=body, content_type="multipart/form-data; boundary=b"
    )
    assert status == 400 and "Please try again" in page


def test_an_unexpected_error_answers_in_our_words(make_app):
    app = make_app()

    def boom():
        raise RuntimeError("a bug")

    app.add_url_rule("/boom", view_func=boom)
    app.add_url_rule("/api/boom", endpoint="api_boom", view_func=boom)
    page = app.test_client().get("/boom")
    assert page.status_code == 500 and "Something went wrong" in page.get_data(as_text=True)
    assert "RuntimeError" not in page.get_data(as_text=True)
    api = app.test_client().get("/api/boom")
    assert api.status_code == 500 and api.get_json() == {
        "error": "Nothing was changed. Please try again in a moment."
    }
    assert app.test_client().get("/api/partners/store-a").get_json() == {
        "error": "The requested URL was not found on the server. If you entered the URL manually please "
        "check your spelling and try again."
    }


# --- browser protections --------------------------------------------------------------------------


def test_every_page_carries_the_browser_protections(make_app, make_subscriber):
    app = make_app(BASE_URL="http://newsletter.test")  # plain http: no Secure cookie (see the next test)
    client = app.test_client()
    page = client.get("/subscribe")
    csp = page.headers["Content-Security-Policy"]
    nonce = re.search(r'<style nonce="([^"]+)">', page.get_data(as_text=True)).group(1)
    assert f"style-src 'nonce-{nonce}'" in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/subscribe").headers["Content-Security-Policy"] != csp  # a fresh nonce each time
    cookie = page.headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie and "HttpOnly" in cookie and "Secure" not in cookie
    assert "style=" not in page.get_data(as_text=True)

    subscriber = make_subscriber()
    with app.app_context():
        urls = [
            links.preferences_url(app.settings, subscriber),
            links.preferences_url(app.settings, subscriber) + "/erase",
            links.unsubscribe_url(app.settings, subscriber),
            links.confirm_url(app.settings, subscriber, None),
        ]
    for url in urls:
        response = client.get(urlsplit(url).path)
        assert response.status_code == 200, url
        assert response.headers["Cache-Control"] == "no-store", url
        assert response.headers["Referrer-Policy"] == "same-origin", url
        assert "style=" not in response.get_data(as_text=True), url
    # The API's JSON has no style at all.
    assert "style-src 'none'" in client.get("/api/customers").headers["Content-Security-Policy"]


def test_every_check_inbox_answer_has_its_own_nonce_and_the_readers_language(make_app):
    """The answer to a signup is rendered once per language (web/fixed_pages.py): each answer still
    carries a fresh CSP nonce, the one its header names, in the language the form was read in."""
    client = make_app().test_client()
    token = csrf_token(client.get("/subscribe").get_data(as_text=True))
    answers = []
    for n, language in enumerate(["en", "de", "en", "fr"]):
        form = {"csrf_token": token, "email": f"reader{n}@example.com", "topics": ["newsletter"]}
        response = client.post("/subscribe", data=form, headers={"Accept-Language": language})
        page = response.get_data(as_text=True)
        nonce = re.search(r'<style nonce="([^"]+)">', page).group(1)
        assert response.status_code == 200
        assert f"style-src 'nonce-{nonce}'" in response.headers["Content-Security-Policy"]
        assert f'<html lang="{language}">' in page and "nonce" + "nonce" not in page
        answers.append((nonce, page))
    assert len({nonce for nonce, _ in answers}) == 4  # never the same nonce twice
    assert "Check your inbox" in answers[0][1] and "Check your inbox" not in answers[1][1]
    # the same words for the same language, only the nonce differs
    assert answers[0][1].replace(answers[0][0], "N") == answers[2][1].replace(answers[2][0], "N")


def test_the_session_cookie_is_secure_behind_https(make_app):
    app = make_app(BASE_URL="https://news.store.example")
    cookie = app.test_client().get("/subscribe", base_url="https://news.store.example").headers["Set-Cookie"]
    assert "Secure" in cookie and "SameSite=Lax" in cookie


def test_a_form_opened_before_a_key_rotation_still_posts(make_app, smtp_sink):
    before = make_app(SECRET_KEY="the-old-secret-key")
    client = before.test_client()
    token = csrf_token(client.get("/subscribe").get_data(as_text=True))
    cookie = client.get_cookie("session").value
    form = {"csrf_token": token, "email": "ann@example.com", "topics": ["newsletter"], "website": ""}

    def submit(app):
        rotated = app.test_client()
        rotated.set_cookie("session", cookie)
        return rotated.post("/subscribe", data=form)

    assert submit(make_app(SECRET_KEY="the-new-secret-key")).status_code == 400  # no fallback: refused
    after = make_app(SECRET_KEY="the-new-secret-key", SECRET_KEY_FALLBACKS="the-old-secret-key")
    response = submit(after)
    assert response.status_code == 200 and "Check your inbox" in response.get_data(as_text=True)


def test_control_characters_in_the_user_agent_are_kept_marked_in_the_ledger(make_app, make_subscriber):
    from sqlalchemy import select

    from newsletter.models import ConsentEvent

    app = make_app()
    subscriber = make_subscriber()
    with app.app_context():
        path = urlsplit(links.unsubscribe_url(app.settings, subscriber)).path
    response = app.test_client().post(
        path, data={"List-Unsubscribe": "One-Click"}, headers={"User-Agent": "Mail\x00Client\x1b/1.0"}
    )
    assert response.status_code == 200
    with app.extensions["newsletter"].sessions() as session:
        agents = session.scalars(select(ConsentEvent.user_agent).where(ConsentEvent.user_agent.is_not(None)))
        assert list(agents) == ["Mail\ufffdClient\ufffd/1.0"]
