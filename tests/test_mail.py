"""The message builder and both transports, against a real SMTP server on loopback."""

import mailbox

import pytest
from aiosmtpd.controller import Controller

from newsletter.mail.message import HeaderInjection, build_message
from newsletter.mail.transports import NO_SMTPUTF8, MaildirTransport, SMTPTransport, TransportError
from tests.conftest import _free_port
from tests.sending_helpers import FaultyHandler


def message(**overrides):
    fields = {
        "sender": "Store <news@store.example>",
        "to": "ann@example.com",
        "subject": "Hello",
        "text": "Hi Ann",
        "html": "<p>Hi Ann</p>",
    }
    fields.update(overrides)
    return build_message(**fields)


@pytest.mark.parametrize(
    "subject",
    [
        "Hello\nBcc: victim@example.com",
        "Hello\r\nX: y",
        "Hello\r",
        "=?UTF-8?Q?Hi=0ABcc:_x@example.com?=",
        "=?UTF-8?B?SGkKQmNjOiB4QGV4YW1wbGUuY29t?=",
        "Hi\u2028there",
        "Hello\x00",
    ],
)
def test_header_injection_is_refused(subject):
    with pytest.raises(HeaderInjection):
        message(subject=subject)


def test_injection_in_recipient_and_extra_headers():
    with pytest.raises(HeaderInjection):
        message(to="ann@example.com\nBcc: x@example.com")
    with pytest.raises(HeaderInjection):
        message(headers={"List-Id": "list\n<x>"})


def test_multipart_alternative_with_date_and_message_id():
    msg = message()
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Date"] and msg["Message-ID"].endswith("@store.example>")


def test_long_lines_and_unicode_stay_under_998_octets():
    html = "<p>" + "ü" * 5000 + "</p>" + "x" * 20000
    msg = message(html=html, text="y" * 3000, subject="Ünïcödé " * 30)
    raw = msg.as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert msg.get_body(("html",)).get_content().rstrip("\n") == html


def test_smtp_transport_delivers_raw_bytes_and_reuses_connection(smtp_sink):
    transport = SMTPTransport(smtp_sink.url, timeout=5)
    transport.send(message(to="a@example.com"))
    first = transport._conn
    transport.send(message(to="b@example.com", html="<p>" + "z" * 5000 + "</p>"))
    assert transport._conn is first
    transport.close()
    raw = smtp_sink.take_raw()
    assert len(raw) == 2
    assert all(max(len(line) for line in r.split(b"\r\n")) <= 998 for r in raw)
    assert b"To: b@example.com" in raw[1]


def test_smtp_transport_reconnects_after_server_dropped_connection(smtp_sink):
    transport = SMTPTransport(smtp_sink.url, timeout=5)
    transport.send(message())
    transport._conn.sock.close()  # the server side went away
    transport.send(message())
    transport.close()
    assert len(smtp_sink.take()) == 2


def test_smtp_transport_unreachable_is_temporary():
    transport = SMTPTransport("smtp://127.0.0.1:1", timeout=2)
    with pytest.raises(TransportError) as info:
        transport.send(message())
    assert info.value.temporary


def test_refusals_are_permanent_with_the_relays_answer():
    handler = FaultyHandler(refuse={"gone@example.com"})
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(), enable_SMTPUTF8=False)
    controller.start()
    transport = SMTPTransport(f"smtp://127.0.0.1:{controller.port}", timeout=5)
    try:
        with pytest.raises(TransportError) as refused:
            transport.send(message(to="gone@example.com"))
        assert str(refused.value) == "recipient refused: 550 5.1.1 no such mailbox"
        with pytest.raises(TransportError) as no_utf8:
            transport.send(message(to="jörg@example.com"))  # smtplib refuses before MAIL FROM
        assert str(no_utf8.value) == NO_SMTPUTF8
        assert (refused.value.temporary, no_utf8.value.temporary) == (False, False)
        transport.send(message(to="fine@example.com"))  # the connection is still good
        assert handler.counts() == {"fine@example.com": 1}
    finally:
        transport.close()
        controller.stop()


def test_smtp_url_options():
    transport = SMTPTransport("smtps://user%40x:p%3Ass@mail.example:2465?verify=false")
    assert (transport.host, transport.port, transport.implicit_tls) == ("mail.example", 2465, True)
    assert (transport.username, transport.password, transport.verify) == ("user@x", "p:ss", False)
    starttls = SMTPTransport("smtp://mail.example:587?starttls=true")
    assert starttls.starttls and not starttls.implicit_tls


def test_maildir_transport(tmp_path):
    transport = MaildirTransport(tmp_path / "outbox")
    transport.send(message())
    box = mailbox.Maildir(tmp_path / "outbox", create=False)
    assert len(box) == 1
    assert next(iter(box))["To"] == "ann@example.com"
