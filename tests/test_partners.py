"""Partner exchange between two real stores (two databases, two apps), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.core import clock
from newsletter.models import (
    ConsentEvent,
    OutboxEmail,
    PartnerImport,
    PartnerInvitation,
    PartnerShare,
    PartnerSuppression,
    Subscriber,
    Suppression,
)
from newsletter.models.subscribers import address_hash
from newsletter.partners import files
from newsletter.partners.signing import file_mac, hash_mac, request_headers
from newsletter.subscribers.wording import partner_wording
from tests.test_preferences import post_preferences

pytest_plugins = ["tests.partner_stores"]  # the two-store fixtures (stores, second_database_url, redis_b)
#: the pair's shared secret, as registered on both sides by the ``stores`` fixture
SECRET = "pair-secret-" + "s" * 40


def write(path, chunks):
    with open(path, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
    return path


def grant_at(store, smtp_sink, email, partners=("store-b",), first_name="Ann", welcomed=True):
    """A person signs up at ``store`` ticking the partner, and confirms from the email (then gets
    the welcome, unless ``welcomed`` is False: a returning person is welcomed only once)."""
    assert store.signup(email, partners=partners, first_name=first_name).status_code == 200
    store.work()
    [mail] = smtp_sink.take()
    assert store.follow_confirm(mail).status_code == 200
    store.work()
    welcomes = smtp_sink.take()
    assert [(m["To"], "Welcome" in m["Subject"]) for m in welcomes] == ([(email, True)] if welcomed else [])


def contact(email, first_name="Ann", to="store-b", given_at="2026-11-01T10:00:00Z", **extra):
    record = {
        "email": email,
        "first_name": first_name,
        "consent": {
            "to": to,
            "to_name": "Store B",
            "given_at": given_at,
            "wording_version": "partner-share-2026-11",
            "wording_sha256": "a" * 64,
        },
        "source": "store-a:web:subscribe",
    }
    record.update(extra)
    return record


def signed_file(tmp_path, records, name="contacts.jsonl", sender="store-a", recipient="store-b", **kw):
    chunks = files.write_signed(files.CONTACTS, sender, recipient, kw.pop("secret", SECRET), records, **kw)
    return write(tmp_path / name, chunks)


def sign_raw_lines(path, lines: list[bytes], secret=SECRET):
    """A file with exactly these lines (header first), correctly signed: for malformed records."""
    mac = file_mac(secret)
    for line in lines:
        mac.update(line)
    trailer = {"type": "trailer", "records": len(lines) - 1, "signature": "hmac-sha256:" + mac.hexdigest()}
    path.write_bytes(b"".join(lines) + json.dumps(trailer).encode() + b"\n")
    return path


def header_line(sender="store-a", recipient="store-b") -> bytes:
    header = {
        "type": "header",
        "format": files.CONTACTS,
        "version": 1,
        "from": sender,
        "to": recipient,
        "created_at": files.iso(clock.now()),
    }
    return json.dumps(header).encode() + b"\n"


def nothing_written(store):
    assert store.count(Subscriber) == 0
    assert store.count(PartnerImport) == 0
    assert store.count(OutboxEmail) == 0
    assert store.count(ConsentEvent) == 0


# --- registry ----------------------------------------------------------------------------------


def test_partners_add_list_remove(stores):
    a, _ = stores()
    added = a.cli("partners", "add", "pet-care", "Pet Care Co")
    assert added.exit_code == 0, added.output
    secret = added.output.split("safe channel): ")[1].strip()
    assert len(secret) >= 40
    listed = a.cli("partners", "list")
    assert "pet-care  Pet Care Co" in listed.output and secret not in listed.output
    assert "store-b  Store B" in listed.output
    for args, error in [
        (["pet-care", "Again"], "exists already"),
        (["Bad ID", "X"], "ids are 1 to 50 of a-z"),
        (["bakery", "The\nBakery"], "line breaks"),
        (["bakery", "B", "--secret", "short"], "32 to 128 printable"),
        (["bakery", "x" * 101], "1 to 100 characters"),
    ]:
        result = a.cli("partners", "add", *args)
        assert result.exit_code == 1 and error in result.output, result.output
    assert a.cli("partners", "remove", "pet-care", "--yes").exit_code == 0
    gone = a.cli("partners", "remove", "pet-care", "--yes")
    assert gone.exit_code == 1 and "no partner with id 'pet-care'" in gone.output


def test_export_needs_a_store_id(stores, tmp_path, make_app):
    a, _ = stores()
    env_without_id = {**a.env(), "NEWSLETTER_STORE_ID": ""}
    from click.testing import CliRunner

    from newsletter.cli import cli

    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "x.jsonl"
    result = CliRunner().invoke(cli, ["partners", "export", "store-b", "--out", str(out)], env=env_without_id)
    assert result.exit_code == 1 and "NEWSLETTER_STORE_ID is not set" in result.output
    assert list(out.parent.iterdir()) == []  # no half-written file either


# --- consent at signup -------------------------------------------------------------------------


def test_signup_checkbox_is_off_names_the_partner_and_grants_only_on_confirmation(stores, smtp_sink):
    a, _ = stores()
    page = a.client().get("/subscribe").get_data(as_text=True)
    box = page.split('id="partner-store-b"')[1].split(">")[0]
    assert "checked" not in box
    assert partner_wording(None, "Store B").text in page

    a.signup("ann@example.com", partners=["store-b"], first_name="Ann")
    a.work()
    [mail] = smtp_sink.take()
    with a.runtime.sessions() as session:
        share = session.scalar(select(PartnerShare))
        assert share.granted is False and share.requested_at is not None  # a tick proves nothing yet
    a.follow_confirm(mail)
    with a.runtime.sessions() as session:
        share = session.scalar(select(PartnerShare))
        assert share.granted and share.granted_at and share.source == "web:subscribe"
        assert share.wording_hash == partner_wording(None, "Store B").sha256
        events = list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))
    assert [e.action for e in events] == ["signup_requested", "confirmed", "partner_share_granted"]
    assert (
        events[-1].details["partner"] == "store-b" and events[-1].wording_version == "partner-share-2026-11"
    )

    # Someone ticking the box for an already active address changes nothing.
    a.signup("ann@example.com", partners=["store-b"])
    a.work()
    welcome, notice = sorted(smtp_sink.take(), key=lambda m: "already" in m["Subject"].lower())
    assert "Welcome" in welcome["Subject"]  # after the confirmation above
    assert "already" in notice["Subject"].lower()


# --- export ------------------------------------------------------------------------------------


def test_only_confirmed_consented_unsuppressed_people_travel(stores, smtp_sink, tmp_path):
    a, _ = stores()
    grant_at(a, smtp_sink, "ann@example.com", first_name="Ann")
    grant_at(a, smtp_sink, "bob@example.com", partners=())  # never agreed
    grant_at(a, smtp_sink, "cara@example.com")  # agreed, then unsubscribed from everything
    grant_at(a, smtp_sink, "eve@example.com")  # agreed, then withdrew in the preference centre
    grant_at(a, smtp_sink, "lil@example.com", first_name="=cmd|' /C calc'!A0")  # name a partner would refuse
    a.signup("dan@example.com", partners=["store-b"])  # agreed but never confirmed
    a.work()
    smtp_sink.take()
    assert a.cli("suppressions", "add", "cara@example.com", "--reason", "unsubscribed").exit_code == 0
    from newsletter.subscribers import links

    with a.runtime.sessions() as session:
        eve = session.scalar(select(Subscriber).where(Subscriber.email == "eve@example.com"))
    url = links.preferences_url(a.settings, eve)
    post_preferences(a.client(), url, partners=[])

    out = tmp_path / "for-b.jsonl"
    result = a.cli("partners", "export", "store-b", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines()
    header, *records, trailer = (json.loads(line) for line in lines)
    assert header["from"] == "store-a" and header["to"] == "store-b"
    assert [r["email"] for r in records] == ["ann@example.com", "lil@example.com"]
    ann, lil = records
    assert ann["first_name"] == "Ann" and lil["first_name"] is None
    assert ann["consent"]["to"] == "store-b" and ann["consent"]["given_at"].endswith("Z")
    assert ann["consent"]["wording_sha256"] == partner_wording(None, "Store B").sha256
    assert ann["source"] == "store-a:web:subscribe"
    with open(out, "rb") as handle:
        envelope = files.verify(handle, SECRET, kind=files.CONTACTS, sender="store-a", recipient="store-b")
    assert envelope.records == 2 and trailer["records"] == 2


def test_api_export_is_authenticated_streamed_and_verifiable(stores, smtp_sink):
    a, _ = stores()
    grant_at(a, smtp_sink, "ann@example.com")
    client = a.client()
    path = "/api/partners/store-b/export"
    assert client.get(path).status_code == 401
    headers = request_headers(SECRET, "GET", path)
    response = client.get(path, headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    body = response.get_data()
    import io

    envelope = files.verify(
        io.BytesIO(body), SECRET, kind=files.CONTACTS, sender="store-a", recipient="store-b"
    )
    assert envelope.records == 1
    replay = client.get(path, headers=headers)
    assert replay.status_code == 409 and "replayed" in replay.get_json()["error"]
    wrong = client.get(path, headers=request_headers("another-secret-" + "x" * 30, "GET", path))
    assert wrong.status_code == 401 and wrong.get_json() == {"error": "bad signature"}


# --- import ------------------------------------------------------------------------------------


def test_import_invites_once_and_our_opt_outs_win(stores, smtp_sink, tmp_path):
    a, b = stores()
    grant_at(a, smtp_sink, "ann@example.com", first_name="Ann")
    grant_at(a, smtp_sink, "eve@example.com")  # unsubscribed at B: B never re-invites her
    grant_at(a, smtp_sink, "fay@example.com")  # subscribes at B herself: left alone
    grant_at(b, smtp_sink, "fay@example.com", partners=())
    assert b.cli("suppressions", "add", "eve@example.com", "--reason", "unsubscribed").exit_code == 0
    out = tmp_path / "a-to-b.jsonl"
    assert a.cli("partners", "export", "store-b", "--out", str(out)).exit_code == 0
    sha = hashlib.sha256(out.read_bytes()).hexdigest()

    first = b.cli("partners", "import", "store-a", str(out))
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [
        f"imported {out} (sha256 {sha}): 3 records",
        "  invited: 1",
        "  skipped, already subscribed: 1",
        "  skipped, suppressed here: 1",
    ]
    b.work()
    [invitation] = smtp_sink.take()
    assert invitation["To"] == "ann@example.com"
    assert "Store A" in invitation["Subject"] and "Store B" in invitation["Subject"]
    text = invitation.get_body(("plain",)).get_content()
    assert "You told Store A that it may share your email address with Store B" in text
    assert "<strong>Store A</strong>" in invitation.get_body(("html",)).get_content()

    again = b.cli("partners", "import", "store-a", str(out))
    assert "  invited: 0" in again.output and "  skipped, invited recently: 1" in again.output
    b.work()
    assert smtp_sink.take() == []

    with b.runtime.sessions() as session:
        ann = session.scalar(select(Subscriber).where(Subscriber.email == "ann@example.com"))
        assert ann.status == "pending" and ann.first_name == "Ann"
        [event] = session.scalars(select(ConsentEvent).where(ConsentEvent.subscriber_id == ann.id))
        imports = list(session.scalars(select(PartnerImport).order_by(PartnerImport.id)))
    assert event.action == "partner_imported" and event.source == "partner:store-a"
    assert event.wording_hash == partner_wording(None, "Store B").sha256
    assert event.details["file_sha256"] == sha and event.details["consent_to"] == "store-b"
    assert [(i.file_sha256, i.report["invited"]) for i in imports] == [(sha, 1), (sha, 0)]

    assert b.follow_confirm(invitation).status_code == 200
    with b.runtime.sessions() as session:
        ann = session.get(Subscriber, ann.id)
        assert ann.status == "active" and {s.topic.slug: s.status for s in ann.subscriptions} == {
            "newsletter": "active"
        }
    # Confirmed from a partner's invitation: welcomed by B like anyone who confirms.
    b.work()
    [welcome] = smtp_sink.take()
    assert welcome["To"] == "ann@example.com" and "Welcome" in welcome["Subject"]
    assert "Store B" in welcome["Subject"] and "/preferences/" in welcome.get_body(("plain",)).get_content()

    # A month later the file is too old; a fresh export of an active person is left alone.
    clock.travel(timedelta(days=31))
    stale = b.cli("partners", "import", "store-a", str(out))
    assert stale.exit_code == 1 and "older than 30 days" in stale.output
    assert a.cli("partners", "export", "store-b", "--out", str(out)).exit_code == 0
    fresh = b.cli("partners", "import", "store-a", str(out))
    assert "  invited: 0" in fresh.output and "  skipped, already subscribed: 2" in fresh.output


def test_records_for_another_store_and_partner_opt_outs_are_skipped(stores, tmp_path, smtp_sink):
    _, b = stores()
    # Store A told B that zed opted out at A: B never invites zed on A's word.
    supp = write(
        tmp_path / "supp.jsonl",
        files.write_signed(
            files.SUPPRESSIONS,
            "store-a",
            "store-b",
            SECRET,
            [
                {
                    "sha256": address_hash("zed@example.com"),
                    "hmac_sha256": hash_mac(SECRET, address_hash("zed@example.com")),
                }
            ],
        ),
    )
    assert b.cli("partners", "import-suppressions", "store-a", str(supp)).exit_code == 0
    path = signed_file(
        tmp_path,
        [
            contact("zed@example.com"),
            contact("other@example.com", to="store-c"),
            contact("ok@example.com"),
            contact("OK@example.com"),
        ],
    )
    result = b.cli("partners", "import", "store-a", str(path))
    assert result.exit_code == 0, result.output
    assert "  invited: 1" in result.output
    assert "  skipped, opted out at partner: 1" in result.output
    assert "  skipped, consent names another store: 1" in result.output
    assert "  skipped, duplicate in file: 1" in result.output
    b.work()
    assert [m["To"] for m in smtp_sink.take()] == ["ok@example.com"]


@pytest.mark.parametrize("where", ["header", "record", "signature", "trailer-count"])
def test_a_flipped_byte_is_refused_and_nothing_is_written(stores, tmp_path, where):
    _, b = stores()
    path = signed_file(tmp_path, [contact("ann@example.com"), contact("bob@example.com")])
    data = bytearray(path.read_bytes())
    lines = bytes(data).split(b"\n")
    offset = {
        "header": data.index(b"store-b") + 2,
        "record": data.index(b"bob@") + 1,
        "signature": len(data) - 5,
        "trailer-count": data.index(b'"records":2') + 10,
    }[where]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    assert len(lines) == 5
    result = b.cli("partners", "import", "store-a", str(path))
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"Error: {path}: ") and line.endswith("; nothing was imported")
    assert "bad signature" in line or "trailer announces" in line
    nothing_written(b)


def test_wrong_secret_sender_recipient_age_and_kind_are_refused(stores, tmp_path):
    _, b = stores()
    cases = {
        "bad signature": signed_file(tmp_path, [contact("a@example.com")], "1", secret="x" * 40),
        "comes from 'store-c'": signed_file(tmp_path, [contact("a@example.com")], "2", sender="store-c"),
        "addressed to 'store-z'": signed_file(tmp_path, [contact("a@example.com")], "3", recipient="store-z"),
        "older than 30 days": signed_file(
            tmp_path, [contact("a@example.com")], "4", created_at=clock.now() - timedelta(days=40)
        ),
        "in the future": signed_file(
            tmp_path, [contact("a@example.com")], "5", created_at=clock.now() + timedelta(hours=1)
        ),
    }
    for expected, path in cases.items():
        result = b.cli("partners", "import", "store-a", str(path))
        assert result.exit_code == 1 and expected in result.output, (expected, result.output)
        assert len(result.output.strip().splitlines()) == 1
    suppressions_file = write(
        tmp_path / "s.jsonl", files.write_signed(files.SUPPRESSIONS, "store-a", "store-b", SECRET, [])
    )
    wrong_kind = b.cli("partners", "import", "store-a", str(suppressions_file))
    assert "this is a 'newsletter-partner-suppressions' file" in wrong_kind.output
    nothing_written(b)


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (
            contact("x@example.com", first_name="Ann\r\nBcc: all@example.com"),
            "line 3: first_name contains a line break",
        ),
        (
            contact("x@example.com", first_name="Ann\u2028Bcc: all@example.com"),
            "line 3: first_name contains a line break, a control character or a text direction override",
        ),
        (
            contact("x@example.com", first_name='=HYPERLINK("http://evil")'),
            "line 3: first_name starts like a spreadsheet formula",
        ),
        (
            contact("x@example.com", first_name="A" * 10_000),
            "line 3: first_name longer than 100 characters (10000)",
        ),
        (contact("x@example.com\nBcc: y@example.com"), "line 3: email contains a line break"),
        (contact("not-an-address"), "line 3: email 'not-an-address': "),
        (contact("x@example.com", consent=None), "line 3: no consent object"),
        (
            contact("x@example.com", given_at="yesterday"),
            "line 3: consent.given_at must be an ISO 8601 UTC time",
        ),
        (
            contact("x@example.com", given_at="2999-01-01T00:00:00Z"),
            "line 3: consent.given_at is in the future",
        ),
        (contact("x@example.com", source="+SUM(A1)"), "line 3: source starts like a spreadsheet formula"),
        (["not", "an", "object"], "line 3: a record must be a JSON object"),
    ],
)
def test_bad_records_refuse_the_whole_file_with_one_line(stores, tmp_path, record, error):
    _, b = stores()
    path = signed_file(tmp_path, [contact("good@example.com"), record])
    result = b.cli("partners", "import", "store-a", str(path))
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert error in line, line
    nothing_written(b)  # the good record before it was not kept either


def test_malformed_bytes_are_refused_with_one_line(stores, tmp_path):
    _, b = stores()
    good = signed_file(tmp_path, [contact("a@example.com")])
    cases = {
        "the file is empty": b"",
        "line 1: not valid JSON": b"hello\nworld\n",
        "line 1: not a partner file": b"[1, 2]\n",
        "line 1: not UTF-8 text": good.read_bytes().decode().encode("utf-16"),
        "cut short": b"".join(good.read_bytes().splitlines(keepends=True)[:-1]),
        "line 1: longer than 64 KiB": b"{" + b" " * 200_000 + b"}\n",
        "line 1: JSON nested too deeply": b"[" * 30_000 + b"\n",
        "line 1: not valid JSON (Exceeds the limit (4300 digits)": b"1" * 5000 + b"\n",
    }
    for expected, content in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_bytes(content)
        result = b.cli("partners", "import", "store-a", str(path))
        assert result.exit_code == 1 and expected in result.output, (expected, result.output)
        assert len(result.output.strip().splitlines()) == 1
    broken_record = sign_raw_lines(tmp_path / "raw.jsonl", [header_line(), b'{"email": "a@example.com",\n'])
    result = b.cli("partners", "import", "store-a", str(broken_record))
    assert "line 2: not valid JSON" in result.output
    latin1 = sign_raw_lines(
        tmp_path / "latin1.jsonl",
        [
            header_line(),
            json.dumps(contact("a@example.com", first_name="Zoë"), ensure_ascii=False).encode("latin-1")
            + b"\n",
        ],
    )
    assert "line 2: not UTF-8 text" in b.cli("partners", "import", "store-a", str(latin1)).output
    nothing_written(b)


def test_a_gigabyte_file_is_streamed_in_bounded_memory(stores, tmp_path):
    import resource

    _, b = stores()
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as handle:  # a valid header, then ~1 GiB of well-formed records, no valid signature
        handle.write(header_line())
        line = json.dumps(contact("a@example.com", first_name="A" * 50)).encode() + b"\n"
        block = line * (4 * 1024 * 1024 // len(line))
        for _ in range(256):
            handle.write(block)
        handle.write(b'{"type": "trailer", "records": 1, "signature": "hmac-sha256:00"}\n')
    assert path.stat().st_size > 1_000_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = b.cli("partners", "import", "store-a", str(path))
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.exit_code == 1 and "bad signature" in result.output
    assert grew_mb < 50, f"peak memory grew by {grew_mb:.0f} MB"
    nothing_written(b)


# --- the API -----------------------------------------------------------------------------------


def test_api_import_auth_and_replay_protection(stores, tmp_path, smtp_sink):
    _, b = stores()
    body = signed_file(tmp_path, [contact("ann@example.com")]).read_bytes()
    client = b.client()
    path = "/api/partners/store-a/contacts"

    def post(headers, data=body, url=path):
        return client.post(url, data=data, headers={**headers, "Content-Type": "application/x-ndjson"})

    assert post({}).status_code == 401
    assert post({"X-Partner-Timestamp": "soon"}).get_json()["error"].startswith("missing or malformed")
    assert post(request_headers("x" * 40, "POST", path, body)).get_json() == {"error": "bad signature"}
    assert post(request_headers(SECRET, "POST", path, body), data=body + b" ").status_code == 401
    assert (
        post(request_headers(SECRET, "POST", path, body), url="/api/partners/nobody/contacts").status_code
        == 401
    )
    stale = request_headers(SECRET, "POST", path, body)
    clock.travel(timedelta(minutes=6))
    assert "outside the 300-second window" in post(stale).get_json()["error"]
    clock.reset()
    nothing_written(b)

    headers = request_headers(SECRET, "POST", path, body)
    ok = post(headers)
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json()["invited"] == 1 and ok.get_json()["file_sha256"] == hashlib.sha256(body).hexdigest()
    replay = post(headers)
    assert replay.status_code == 409 and "replayed" in replay.get_json()["error"]
    with b.runtime.sessions() as session:
        assert session.scalar(select(PartnerImport.channel)) == "api"
        assert len(list(session.scalars(select(PartnerInvitation)))) == 1

    bad = signed_file(
        tmp_path, [contact("bob@example.com"), contact("x@example.com", first_name="=1+1")], "bad"
    )
    bad_body = bad.read_bytes()
    refused = post(request_headers(SECRET, "POST", path, bad_body), data=bad_body)
    assert (
        refused.status_code == 422
        and "line 3: first_name starts like a spreadsheet formula" in refused.get_json()["error"]
    )
    with b.runtime.sessions() as session:
        assert session.scalar(select(Subscriber.id).where(Subscriber.email == "bob@example.com")) is None
    # The invitation queued by the good request goes out to its worker as usual.
    b.work()
    assert [m["To"] for m in smtp_sink.take()] == ["ann@example.com"]


# --- suppression exchange -----------------------------------------------------------------------


def test_suppression_lists_travel_as_hashes_and_opt_outs_stop_exports(stores, smtp_sink, tmp_path):
    a, b = stores()
    grant_at(a, smtp_sink, "zed@example.com")
    grant_at(a, smtp_sink, "ann@example.com")
    assert b.cli("suppressions", "add", "zed@example.com", "--reason", "unsubscribed").exit_code == 0
    out = tmp_path / "b-supp.jsonl"
    assert b.cli("partners", "export-suppressions", "store-a", "--out", str(out)).exit_code == 0
    _, entry, _ = (json.loads(line) for line in out.read_bytes().splitlines())
    assert entry == {
        "sha256": address_hash("zed@example.com"),
        "hmac_sha256": hash_mac(SECRET, entry["sha256"]),
    }
    assert b"zed@" not in out.read_bytes()

    first = a.cli("partners", "import-suppressions", "store-b", str(out))
    assert first.exit_code == 0 and "1 hashes, 1 new, 0 known already" in first.output
    again = a.cli("partners", "import-suppressions", "store-b", str(out))
    assert "1 hashes, 0 new, 1 known already" in again.output
    assert a.count(PartnerSuppression) == 1
    assert a.count(Suppression) == 0  # zed opted out at B, not at A: A still writes to zed

    export = tmp_path / "a-to-b.jsonl"
    assert a.cli("partners", "export", "store-b", "--out", str(export)).exit_code == 0
    emails = [json.loads(line).get("email") for line in export.read_bytes().splitlines()[1:-1]]
    assert emails == ["ann@example.com"]

    forged = write(
        tmp_path / "forged.jsonl",
        files.write_signed(
            files.SUPPRESSIONS, "store-b", "store-a", SECRET, [{"sha256": "0" * 64, "hmac_sha256": "1" * 64}]
        ),
    )
    result = a.cli("partners", "import-suppressions", "store-b", str(forged))
    assert result.exit_code == 1 and "line 2: hmac_sha256 does not match the address hash" in result.output
    assert a.count(PartnerSuppression) == 1


# --- migration ---------------------------------------------------------------------------------


def test_migration_0004_copies_grant_evidence_from_the_ledger(database_url):
    from sqlalchemy import create_engine, text

    from newsletter.core.migrate import downgrade, upgrade

    downgrade(database_url, "0003")
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (id, email, email_hash, status, created_at, frequency, time_zone) "
                "VALUES (1, 'ann@example.com', :h, 'active', '2026-11-01 10:00:00', 'any', 'UTC')"
            ),
            {"h": address_hash("ann@example.com")},
        )
        conn.execute(
            text(
                "INSERT INTO partner_shares (subscriber_id, partner_id, granted, updated_at) "
                "VALUES (1, 'pet-care', :t, '2026-11-02 10:00:00'), (1, 'bakery', :f, '2026-11-02 10:00:00')"
            ),
            {"t": True, "f": False},
        )
        for partner, wording_hash in (("bakery", "b" * 64), ("pet-care", "c" * 64)):
            conn.execute(
                text(
                    "INSERT INTO consent_events (subscriber_id, action, topics, occurred_at, source, "
                    "wording_version, wording_hash, details) VALUES (1, 'partner_share_granted', '[]', "
                    "'2026-11-02 10:00:00', 'web:preferences', 'partner-share-2026-11', :h, :d)"
                ),
                {"h": wording_hash, "d": json.dumps({"partner": partner})},
            )
    upgrade(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT partner_id, granted_at, wording_hash, source FROM partner_shares ORDER BY partner_id"
            )
        ).all()
    engine.dispose()
    assert [(r[0], r[1] is not None, r[2], r[3]) for r in rows] == [
        ("bakery", False, None, None),
        ("pet-care", True, "c" * 64, "web:preferences"),
    ]


# --- Redis outages and retries -------------------------------------------------------------------


def test_invitations_survive_a_redis_outage_and_never_go_twice(stores, make_app, tmp_path, smtp_sink):
    from newsletter.partners.invitations import deliver_invitations
    from newsletter.subscribers.jobs import sweep_outbox
    from tests.partner_stores import Store

    _, b = stores()
    no_redis = Store(
        make_app(
            STORE_ID="store-b",
            STORE_NAME="Store B",
            DATABASE_URL=b.settings.database_url,
            REDIS_URL="redis://127.0.0.1:1/0",
        ),
        "store-b",
    )
    path = signed_file(tmp_path, [contact("ann@example.com")])
    result = no_redis.cli("partners", "import", "store-a", str(path))
    assert result.exit_code == 0 and "  invited: 1" in result.output, result.output
    b.work()
    assert smtp_sink.take() == []  # nothing reached a queue...

    assert b.job(sweep_outbox, older_than=timedelta(0)) == 1  # ...until a worker's sweep finds the row
    b.work()
    [mail] = smtp_sink.take()
    assert mail["To"] == "ann@example.com" and "Store A" in mail["Subject"]
    with b.runtime.sessions() as session:
        outbox_id = session.scalar(select(OutboxEmail.id))
    assert b.job(deliver_invitations, [outbox_id]) == 0  # a retried job sends nothing twice
    assert smtp_sink.take() == []


def test_api_refuses_when_replay_protection_is_unavailable(stores, make_app, tmp_path):
    _, b = stores()
    app = make_app(
        STORE_ID="store-b", DATABASE_URL=b.settings.database_url, REDIS_URL="redis://127.0.0.1:1/0"
    )
    body = signed_file(tmp_path, [contact("ann@example.com")]).read_bytes()
    path = "/api/partners/store-a/contacts"
    response = app.test_client().post(path, data=body, headers=request_headers(SECRET, "POST", path, body))
    assert response.status_code == 503 and "replay protection is unavailable" in response.get_json()["error"]
    nothing_written(b)


def test_a_returning_person_can_tick_a_partner_when_signing_up_again(stores, smtp_sink):
    from newsletter.subscribers import preferences
    from newsletter.subscribers.consent import RequestInfo

    a, _ = stores()
    grant_at(a, smtp_sink, "ann@example.com", partners=())
    with a.runtime.sessions() as session:
        ann = session.scalar(select(Subscriber))
        preferences.unsubscribe(session, ann, RequestInfo(None, None, "test"))
        session.commit()
    grant_at(a, smtp_sink, "ann@example.com", partners=["store-b"], welcomed=False)
    with a.runtime.sessions() as session:
        assert session.scalar(select(Subscriber.status)) == "active"
        assert session.scalar(select(PartnerShare.granted)) is True
