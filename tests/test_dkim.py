"""DKIM: the engine signs what it sends, and dkimpy (an independent verifier) accepts it
with exactly the TXT record that ``newsletter dkim keygen`` printed."""

from __future__ import annotations

import re
import stat
from datetime import timedelta

import dkim as dkimpy
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.campaigns import scheduling
from newsletter.cli import cli
from newsletter.core.config import Settings, load_settings
from newsletter.mail import dkim
from newsletter.mail.transports import SigningTransport, TransportError
from newsletter.models import OutboxEmail
from tests.sending_helpers import now_floor, run_engine, write_campaign

REQUIRED = {"from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post"}
ZONE_LINE = re.compile(r"^\s*(\S+)\. IN TXT ((?:\"[^\"]*\" ?)+)$", re.M)


def keygen(instance, *args: str) -> tuple[str, bytes, str]:
    """Run ``newsletter dkim keygen``; the DNS name, the TXT value and the output it printed."""
    env = {"NEWSLETTER_INSTANCE_PATH": str(instance), "NEWSLETTER_SECRET_KEY": "s" * 32}
    result = CliRunner().invoke(cli, ["dkim", "keygen", *args], env=env)
    assert result.exit_code == 0, result.output
    [(name, strings)] = ZONE_LINE.findall(result.output)
    parts = re.findall(r'"([^"]*)"', strings)
    assert all(len(p) <= 255 for p in parts)
    return name, "".join(parts).encode(), result.output


def verifies(raw: bytes, records: dict[str, bytes], index: int = 0) -> bool:
    def dnsfunc(name, timeout=5):
        return records.get(name.decode().rstrip("."))

    try:
        return dkimpy.DKIM(raw).verify(idx=index, dnsfunc=dnsfunc)
    except dkimpy.DKIMException:  # e.g. "body hash mismatch": dkimpy raises what dkim.verify() says False to
        return False


def signed_headers(raw: bytes, index: int = 0) -> set[str]:
    d = dkimpy.DKIM(raw)
    d.verify_headerprep(index)
    return {h.decode() for h in d.include_headers}


def test_keygen_writes_a_private_key_once_and_prints_its_record(tmp_path):
    instance = tmp_path / "instance"
    name, value, output = keygen(instance, "--selector", "news")
    key_file = instance / "dkim" / "news.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert name == "news._domainkey.store.example"
    assert value.startswith(b"v=DKIM1; k=rsa; p=MII")
    assert "NEWSLETTER_DKIM_SELECTOR=news" in output
    before = key_file.read_bytes()
    env = {"NEWSLETTER_INSTANCE_PATH": str(instance), "NEWSLETTER_SECRET_KEY": "s" * 32}
    again = CliRunner().invoke(cli, ["dkim", "keygen", "--selector", "news"], env=env)
    assert again.exit_code == 1 and "exists; --force replaces it" in again.output
    assert key_file.read_bytes() == before
    bad = CliRunner().invoke(cli, ["dkim", "keygen", "--selector", "no/pe"], env=env)
    assert bad.exit_code == 1 and "selector" in bad.output and "Traceback" not in bad.output
    _, replaced, _ = keygen(instance, "--selector", "news", "--force")
    assert replaced != value


def test_campaign_and_transactional_mail_verify_with_the_printed_record(
    make_app, make_subscriber, signup, smtp_sink, work, tmp_path
):
    instance = tmp_path / "instance"
    rsa_name, rsa_value, _ = keygen(instance, "--selector", "news")
    ed_name, ed_value, _ = keygen(instance, "--selector", "news", "--algorithm", "ed25519")
    assert ed_name == "news-ed25519._domainkey.store.example" and ed_value.startswith(
        b"v=DKIM1; k=ed25519; p="
    )
    records = {rsa_name: rsa_value, ed_name: ed_value}
    app = make_app(
        DKIM_SELECTOR="news",
        DKIM_KEY_FILE=str(instance / "dkim" / "news.pem"),
        MARKETING_CAPS="",
        QUIET_HOURS="",
        BOUNCE_ADDRESS="bounces@store.example",
    )
    runtime = app.extensions["newsletter"]
    make_subscriber("ann@example.com", topics=("early-access",))
    folder = write_campaign(tmp_path, waves=[("all", "all", now_floor() - timedelta(minutes=1))])
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()
    run_engine(runtime, work)
    [campaign_mail] = smtp_sink.take_raw()

    signup("bob@example.com", topics=["newsletter"])
    work()
    [transactional_mail] = smtp_sink.take_raw()

    for raw in (campaign_mail, transactional_mail):
        assert raw.count(b"DKIM-Signature:") == 2
        assert verifies(raw, records, 0) and verifies(raw, records, 1)  # Ed25519 on top, RSA below
        assert dkimpy.verify(raw, dnsfunc=lambda n, timeout=5: records.get(n.decode().rstrip(".")))
        for index in (0, 1):
            assert {"from", "to", "subject", "date", "message-id", "mime-version"} <= signed_headers(
                raw, index
            )
        # a changed body or Subject breaks both signatures
        head, _, body = raw.partition(b"\r\n\r\n")
        tampered_body = head + b"\r\n\r\n" + body.replace(b"a", b"4", 1)
        tampered_subject = re.sub(rb"\r\nSubject: ", b"\r\nSubject: Re: ", raw, count=1)
        for tampered in (tampered_body, tampered_subject):
            assert tampered != raw
            assert not verifies(tampered, records, 0) and not verifies(tampered, records, 1)
    assert REQUIRED <= signed_headers(campaign_mail)  # the one-click headers are covered
    assert b"d=store.example" in campaign_mail and b"c=relaxed/relaxed" in campaign_mail


def test_a_configured_key_that_is_missing_is_one_line_and_sends_nothing(
    make_app, signup, smtp_sink, work, tmp_path
):
    missing = tmp_path / "nowhere" / "news.pem"
    app = make_app(DKIM_SELECTOR="news", DKIM_KEY_FILE=str(missing))
    with pytest.raises(
        dkim.DKIMError, match=r"^DKIM key .*news.pem cannot be read .*dkim keygen --selector news"
    ):
        dkim.signer_for(app.extensions["newsletter"].settings)
    signup("bob@example.com", topics=["newsletter"])
    work()
    assert smtp_sink.take_raw() == []  # unsigned mail never leaves
    runtime = app.extensions["newsletter"]
    with runtime.sessions() as session:
        [outbox] = session.query(OutboxEmail).all()
        assert outbox.sent_at is None
        assert outbox.last_error.startswith("not sent: DKIM key ") and "\n" not in outbox.last_error

    # the worker refuses to start, in one line
    env = {
        "NEWSLETTER_INSTANCE_PATH": str(tmp_path / "instance"),
        "NEWSLETTER_SECRET_KEY": "s" * 32,
        "NEWSLETTER_DKIM_SELECTOR": "news",
        "NEWSLETTER_DKIM_KEY_FILE": str(missing),
    }
    result = CliRunner().invoke(cli, ["worker", "--burst"], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("Error: DKIM key ") and result.output.count("\n") == 1


def test_the_key_file_defaults_to_the_instance_folder(tmp_path):
    settings = load_settings(
        tmp_path, environ={"NEWSLETTER_SECRET_KEY": "s" * 32, "NEWSLETTER_DKIM_SELECTOR": "s1"}
    )
    assert settings.dkim_key_file == str(tmp_path / "dkim" / "s1.pem")
    assert dkim.signing_domain(settings) == "store.example"
    off = load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": "s" * 32})
    assert dkim.signer_for(off) is None and off.dkim_key_file == ""


def test_a_message_that_cannot_be_signed_fails_alone(tmp_path):
    instance = tmp_path / "instance"
    name, value, _ = keygen(instance, "--selector", "one")
    sent = []

    class Inner:
        def send_raw(self, envelope_from, recipients, data):
            sent.append(data)

        def close(self):
            pass

    config = Settings(
        secret_key="s" * 32, dkim_selector="one", dkim_key_file=str(instance / "dkim" / "one.pem")
    )
    transport = SigningTransport(Inner(), config)
    with pytest.raises(TransportError) as refused:
        transport.send_raw("a@store.example", ["b@example.com"], b"To: b@example.com\r\n\r\nno From\r\n")
    assert not refused.value.temporary and "without From" in str(refused.value)
    transport.send_raw("a@store.example", ["b@example.com"], b"From: a@store.example\r\n\r\nhello\r\n")
    assert verifies(sent[0], {name: value})


def test_dns_check_says_what_to_publish_and_that_dns_did_not_answer(tmp_path):
    instance = tmp_path / "instance"
    keygen(instance, "--selector", "news")
    env = {
        "NEWSLETTER_INSTANCE_PATH": str(instance),
        "NEWSLETTER_SECRET_KEY": "s" * 32,
        "NEWSLETTER_DKIM_SELECTOR": "news",
        "NEWSLETTER_BOUNCE_ADDRESS": "bounces@mail.other.example",
        "NEWSLETTER_SMTP_URL": "smtp://email-smtp.eu-west-1.amazonaws.com:587",
    }
    # a resolver that never answers: a UDP port nobody serves on loopback
    result = CliRunner().invoke(
        cli, ["dns", "check", "--nameserver", "127.0.0.1:9", "--timeout", "0.5"], env=env
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert 'mail.other.example. IN TXT "v=spf1 include:amazonses.com ~all"' in out
    assert "NOT aligned: Return-Path domain mail.other.example vs From domain store.example" in out
    assert 'news._domainkey.store.example. IN TXT "v=DKIM1; k=rsa; p=' in out
    assert "aligned: d=store.example and From domain store.example" in out
    assert '_dmarc.store.example. IN TXT "v=DMARC1; p=none; rua=mailto:' in out
    assert out.count("not checked: DNS did not answer (") == 3 and "Traceback" not in out


@pytest.fixture(scope="module")
def signer_and_records(tmp_path_factory) -> tuple[dkim.Signer, dict[str, bytes]]:
    instance = tmp_path_factory.mktemp("any") / "instance"
    name, value, _ = keygen(instance, "--selector", "h")
    return dkim.Signer("store.example", [dkim.load_key(instance / "dkim" / "h.pem", "h")]), {name: value}


@settings(max_examples=60, deadline=None)
@given(
    subject=st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=60),
    body=st.lists(st.text(alphabet=" \tab.<>=\u00e9", max_size=30), max_size=12),
)
def test_any_message_verifies(signer_and_records, subject, body):
    """Whitespace runs, empty lines at the end, folded-looking text: relaxed canonicalisation as dkimpy's."""
    signer, records = signer_and_records
    text = f"From: a@store.example\r\nTo: b@example.com\r\nSubject: {subject}\r\n\r\n" + "\r\n".join(body)
    assert verifies(signer.sign(text.encode()), records)


class ZoneServer:
    """A real DNS server on loopback UDP (dnspython's message codec) answering TXT from a dict."""

    def __init__(self, records: dict[str, list[str]]):
        import socket
        import threading

        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset

        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".")
            if name in self.records:
                texts = [" ".join(f'"{s}"' for s in dkim.txt_strings(v)) for v in self.records[name]]
                reply.answer.append(dns.rrset.from_text(question.name, 300, "IN", "TXT", *texts))
            else:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


def test_dns_check_reads_what_is_published(tmp_path):
    instance = tmp_path / "instance"
    name, value, _ = keygen(instance, "--selector", "news")
    _, other, _ = keygen(tmp_path / "other", "--selector", "news")
    server = ZoneServer(
        {
            "store.example": ["v=spf1 include:amazonses.com ~all", "google-site-verification=x"],
            name: [value.decode()],
        }
    )
    env = {
        "NEWSLETTER_INSTANCE_PATH": str(instance),
        "NEWSLETTER_SECRET_KEY": "s" * 32,
        "NEWSLETTER_DKIM_SELECTOR": "news",
    }
    try:
        ask = ["dns", "check", "--nameserver", f"127.0.0.1:{server.port}", "--timeout", "5"]
        out = CliRunner().invoke(cli, ask, env=env).output
        assert "published: v=spf1 include:amazonses.com ~all" in out
        assert "published, matches the key" in out
        assert out.rstrip().endswith("not published")  # no DMARC record yet
        server.records[name] = [other.decode()]  # a stale record: another key
        out = CliRunner().invoke(cli, ask, env=env).output
        assert "published, but p= is NOT this key (signatures fail)" in out
    finally:
        server.close()


def test_a_non_ascii_address_is_signed_and_sent_with_smtputf8(make_app, signup, work, tmp_path):
    """The signing transport serialises a transactional message itself: SMTPUTF8 must still hold."""
    from aiosmtpd.controller import Controller

    from tests.conftest import Recorder, _free_port

    instance = tmp_path / "instance"
    name, value, _ = keygen(instance, "--selector", "news")
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=_free_port(), enable_SMTPUTF8=True)
    controller.start()
    try:
        make_app(
            SMTP_URL=f"smtp://127.0.0.1:{controller.port}",
            DKIM_SELECTOR="news",
            DKIM_KEY_FILE=str(instance / "dkim" / "news.pem"),
        )
        signup("jörg@example.com", topics=["newsletter"])
        work()
        [(_sender, rcpts, raw)] = recorder.messages
    finally:
        controller.stop()
    assert rcpts == ["jörg@example.com"]
    assert "jörg@example.com".encode() in raw  # sent as UTF-8 (RFC 6532), not encoded words
    assert verifies(raw, {name: value})
