"""Property-based fuzzing of every route and form: whatever arrives, the answer is never a 5xx.

Routes come from ``app.url_map``, so a new route is fuzzed without touching this file. Each
request is built by hypothesis (path variables, method, query, headers, body) and sent straight
to the WSGI app (the test client itself chokes on some Host headers). Runs on SQLite and,
with fewer examples, on PostgreSQL, which refuses NUL bytes and over-long values that SQLite
would store.
"""

from __future__ import annotations

import inspect
import io
import json
import string
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.routing import Rule
from werkzeug.test import EnvironBuilder, run_wsgi_app
from wtforms.fields.core import UnboundField

from newsletter.partners import registry, signing
from newsletter.subscribers import forms
from newsletter.subscribers.tokens import Purpose, make_token
from tests.conftest import csrf_token

API_TOKEN = "fuzz-api-token-" + "t" * 20
PARTNER_SECRET = "fuzz-partner-secret-" + "p" * 30
#: examples per route and method: enough to find the classic mistakes, small enough for `make test`
EXAMPLES = {"sqlite": 15, "postgresql": 15}

NASTY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "ann@example.com\x00",
    "/",
    "../..",
    "%",
    "%00",
    "%zz",
    "?",
    "#",
    ";",
    ",",
    "&",
    "=",
    "\t",
    "\x7f",
    "\u2028",
    "\ufeff",
    "é",
    "null",
    "[]",
    "{}",
    "<script>alert(1)</script>",
    "'\"",
    "=1+1",
    "-1",
    "99999999999999999999999999",
    "1e400",
    "NaN",
    "x" * 5000,
    "x" * 100_000,
]
#: Host headers werkzeug cannot route (empty labels, over-long labels, bad ports)
HOSTS = ["a..b", "x" * 300, ".", "[", "[::1", "host:port", "host:99999", "xn--", "xn--zz", "\x00", "a b"]
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data; boundary=",
    "application/x-ndjson",
    "text/plain",
    "text/plain; charset=utf-32",
    "application/json; charset=unknown",
    "",
    "\x00",
    "*/*",
]
#: values the forms accept, so that one nasty field among good ones gets all the way through
FORM_VALUES = [
    "newsletter",
    "UTC",
    "weekly",
    "everything",
    "topic",
    "1",
    "y",
    "store-a",
    "One-Click",
    "ann@example.com",
]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


def pick(*branches: st.SearchStrategy) -> st.SearchStrategy:
    """One of ``branches``, each as likely (``st.one_of`` leans hard towards the richest one)."""
    return st.sampled_from(branches).flatmap(lambda branch: branch)


text = pick(st.sampled_from(NASTY), st.text(max_size=40), st.text(string.printable, max_size=200))


def with_nul(value: str) -> str:
    return value[: len(value) // 2] + "\x00" + value[len(value) // 2 :]


#: PostgreSQL refuses a NUL byte in text or JSON where SQLite stores it: its pass puts one in most values
text_with_nul = pick(text, text.map(with_nul), text.map(with_nul))


def deep_json(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def json_bodies(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=12,
    )
    # Shaped like the store's customer records, so that fuzzed values get past the first check.
    customers = st.fixed_dictionaries(
        {"email": pick(st.just("ann@example.com"), text), "tier": text, "note": text},
        optional={
            "orders_count": values,
            "lifetime_value": values,
            "last_order_at": values,
            "attributes": st.dictionaries(text, values, max_size=3),
        },
    )
    return pick(
        values.map(json.dumps),
        st.lists(customers, min_size=1, max_size=4).map(json.dumps),
        st.builds(deep_json, st.sampled_from([50, 5_000, 200_000]), st.sampled_from(["list", "dict"])),
    )


def form_field_names() -> list[str]:
    """Every field of every form in the public pages, plus what the views read by hand."""
    names = {"csrf_token", "List-Unsubscribe"}
    for _, cls in inspect.getmembers(forms, inspect.isclass):
        names.update(name for name, _ in inspect.getmembers(cls, lambda v: isinstance(v, UnboundField)))
    return sorted(names)


def header_value(value: str) -> str:
    """As a server hands it over: bytes read as latin-1, no line breaks (they end a header)."""
    return value.replace("\r", "").replace("\n", "").encode("utf-8").decode("latin-1")


@pytest.fixture
def fuzz_app(make_app, make_subscriber, runtime):
    app = make_app(
        API_TOKEN=API_TOKEN,
        STORE_ID="store-b",
        SIGNUP_RATE_LIMIT="1000000/60",
        CONFIRMATIONS_PER_ADDRESS=0,
        SNS_TOPIC_ARNS="arn:aws:sns:us-east-1:123456789012:fuzz",  # the webhooks on, not a 404
        MAILGUN_SIGNING_KEY="fuzz-mailgun-key-" + "m" * 20,
    )
    with app.app_context():
        with runtime.sessions() as session:
            registry.add_partner(session, "store-a", "Store A", PARTNER_SECRET)
            session.commit()
        registry.clear_cache()
    return app


def tokens_for(app, subscribers) -> list[str]:
    """Genuine tokens of every purpose, so that fuzzed forms also reach the views behind the link."""
    found = []
    for subscriber in subscribers:
        payload = {"s": subscriber.id, "h": subscriber.email_hash[:16]}
        for purpose in Purpose:
            found.append(make_token(app.settings, purpose, {**payload, "c": 1, "t": "newsletter"}))
            found.append(make_token(app.settings, purpose, payload))
    return found


def fuzz_rules(app) -> list[tuple[Rule, str]]:
    """Every route with every method it serves, and one method it does not serve."""
    pairs = []
    for rule in app.url_map.iter_rules():
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        pairs += [(rule, method) for method in methods]
        pairs.append((rule, "PUT" if "PUT" not in methods else "PATCH"))
    return pairs


#: the parts of a request that are genuine unless spoiled; the rest (path values, bodies,
#: other headers) is fuzzed every time
SPOILABLE = ["method", "path", "host", "cookie", "csrf", "auth", "timestamp", "nonce", "signature", "sign"]


@st.composite
def requests(draw, rule: Rule, method: str, tokens: list[str], fields: list[str], session_csrf, text):
    """One request for ``rule``: a dict of EnvironBuilder arguments, plus whether to sign it.

    A few parts are spoiled, the others genuine (cookie, CSRF token, API token, a partner's
    signature), so that fuzzed values get past the door into the views and services behind it.
    """
    spoiled = draw(st.sets(st.sampled_from(SPOILABLE), max_size=3))
    values = {name: draw(pick(text, st.sampled_from(tokens), st.just("store-a"))) for name in rule.arguments}
    path = rule.rule
    for name, value in values.items():
        quoted = quote(value, safe="") if draw(st.booleans()) else quote(value, safe="/%")
        path = path.replace(f"<{name}>", quoted).replace(f"<path:{name}>", quoted)
    if "path" in spoiled:
        prefix = draw(st.sampled_from(["/", "//", "/api/", "/api/partners/", "/%00", "/preferences/"]))
        path = prefix + quote(draw(text), safe="/")
    if "method" in spoiled:
        method = draw(st.sampled_from(METHODS))

    cookie, token = session_csrf
    timestamp = signing.request_headers("x", "GET", "/")[signing.TIMESTAMP_HEADER]
    genuine = {  # part: (header, genuine value, how to spoil it)
        "host": ("Host", "localhost", pick(st.sampled_from(HOSTS), text)),
        "cookie": ("Cookie", f"session={cookie}", pick(text.map("session=".__add__), text)),
        "auth": ("Authorization", f"Bearer {API_TOKEN}", pick(text.map("Bearer ".__add__), text)),
        "timestamp": (signing.TIMESTAMP_HEADER, timestamp, text),
        "nonce": (signing.NONCE_HEADER, "n" * 20, text),
        "signature": (signing.SIGNATURE_HEADER, "0" * 64, text),
    }
    headers = {}
    for part, (name, value, spoil) in genuine.items():
        if part not in spoiled:
            headers[name] = value
        elif draw(st.booleans()):  # spoiled by a bad value, or else by leaving it out
            headers[name] = header_value(draw(spoil))
    for name in ("User-Agent", "Accept", "Origin", "Referer"):
        if draw(st.booleans()):
            headers[name] = header_value(draw(text))

    body_kind = draw(st.sampled_from(["none", "form", "multipart", "json", "bytes"]))
    data: bytes | dict | None = None
    content_type = None
    if body_kind in ("form", "multipart"):
        field_values = pick(text, st.sampled_from([*FORM_VALUES, token]))
        pairs = draw(st.lists(st.tuples(pick(st.sampled_from(fields), text), field_values), max_size=8))
        if "csrf" not in spoiled:
            pairs.insert(0, ("csrf_token", token))
        if body_kind == "form":
            data = urlencode(pairs).encode("utf-8")
            content_type = "application/x-www-form-urlencoded"
        else:
            data = {}
            for key, value in pairs:
                data.setdefault(key, []).append(value)
            data["upload"] = (io.BytesIO(draw(st.binary(max_size=200))), draw(text) or "f")
    elif body_kind == "json":
        data = draw(json_bodies(text)).encode("utf-8")
        content_type = draw(pick(st.just("application/json"), st.sampled_from(CONTENT_TYPES)))
    elif body_kind == "bytes":
        data = draw(st.binary(max_size=3000))
        content_type = draw(pick(st.sampled_from(CONTENT_TYPES), text.map(header_value)))
    # Raw is fine, but not CR or LF: they end the request line, no server passes them on.
    raw_query = text.map(lambda t: t.replace("\r", "").replace("\n", ""))
    pairs_query = st.lists(st.tuples(text, text), max_size=4).map(urlencode)
    query = draw(pick(st.just(""), pairs_query, raw_query))
    return {
        "path": path,
        "method": method,
        "headers": headers,
        "data": data,
        "content_type": content_type,
        "query_string": query,
        "sign": "partner_id" in values and "sign" not in spoiled,
    }


def send(app, request: dict) -> int:
    """Send one fuzzed request straight to the WSGI app; the status code."""
    request = dict(request)
    sign = request.pop("sign")
    builder = EnvironBuilder(**request)
    environ = builder.get_environ()
    builder.close()
    if sign:
        # A partner's genuine signature over whatever the fuzzed body is: the import's file checks must hold.
        body = environ["wsgi.input"].read()
        environ["wsgi.input"] = io.BytesIO(body)
        path = environ["PATH_INFO"].encode("latin-1").decode("utf-8", "replace")
        signed = signing.request_headers(PARTNER_SECRET, environ["REQUEST_METHOD"], path, body)
        for key, value in signed.items():
            environ["HTTP_" + key.upper().replace("-", "_")] = value
    app_iter, status, _ = run_wsgi_app(app, environ, buffered=True)
    b"".join(app_iter)
    return int(status.split()[0])


def test_no_request_gets_a_server_error(fuzz_app, make_subscriber, database_url):
    """Random bytes, huge and empty values, wrong content types, NUL, separators, deep JSON: 4xx at worst."""
    app = fuzz_app
    subscribers = [make_subscriber(f"fuzz{i}@example.com") for i in range(3)]
    tokens = tokens_for(app, subscribers)
    client = app.test_client()
    page = client.get("/subscribe").get_data(as_text=True)
    session_csrf = (client.get_cookie("session").value, csrf_token(page))
    fields = form_field_names()
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    values = text if kind == "sqlite" else text_with_nul

    for rule, method in fuzz_rules(app):
        strategy = requests(rule, method, tokens, fields, session_csrf, values)
        fuzz_route(app, rule, method, strategy, EXAMPLES[kind])


def fuzz_route(app, rule: Rule, method: str, strategy, examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def answers_below_500(request):
        status = send(app, request)
        assert status < 500, f"{method} {rule.rule}: {request!r} -> {status}"

    answers_below_500()
