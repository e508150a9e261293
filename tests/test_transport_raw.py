"""send_raw: complete messages as bytes on a reused SMTP connection, answers mapped to TransportError."""

from __future__ import annotations

import mailbox
import smtplib

import pytest
from aiosmtpd.controller import Controller

from newsletter.mail.transports import NO_SMTPUTF8, MaildirTransport, SMTPTransport, TransportError
from tests.conftest import _free_port
from tests.sending_helpers import FaultyHandler, start_faulty_smtp

DATA = b"From: a@store.example\r\nTo: b@example.com\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"


def test_send_raw_delivers_the_exact_bytes_on_one_connection(smtp_sink):
    transport = SMTPTransport(smtp_sink.url)
    try:
        transport.send_raw("bounces@store.example", ["b@example.com"], DATA)
        first = transport._conn
        transport.send_raw("bounces@store.example", ["c@example.com"], DATA)
        assert transport._conn is first  # reused
    finally:
        transport.close()
    raw = smtp_sink.take_raw()
    assert raw == [DATA, DATA]  # dot-stuffing undone by the server: byte for byte


@pytest.mark.parametrize(
    "handler, code, temporary",
    [
        (FaultyHandler(refuse={"gone@example.com"}), 550, False),
        (FaultyHandler(seed=1, temporary_rate=2.0), 451, True),  # every RCPT answered 451
    ],
)
def test_send_raw_maps_smtp_answers(handler, code, temporary):
    controller = start_faulty_smtp(_free_port(), handler)
    transport = SMTPTransport(f"smtp://127.0.0.1:{controller.port}")
    try:
        with pytest.raises(TransportError) as info:
            transport.send_raw("bounces@store.example", ["gone@example.com"], DATA)
        assert info.value.code == code and info.value.temporary is temporary
    finally:
        transport.close()
        controller.stop()


def test_maildir_send_raw(tmp_path):
    MaildirTransport(tmp_path / "outbox").send_raw("a@store.example", ["b@example.com"], DATA)
    (message,) = list(mailbox.Maildir(tmp_path / "outbox", create=False))
    assert message["Subject"] == "hi"


@pytest.fixture
def pipelining(request, monkeypatch) -> bool:
    """aiosmtpd does not advertise PIPELINING but reads pipelined commands in order: pretend it does
    (unless parametrized indirectly with False)."""
    on = getattr(request, "param", True)
    if on:
        original = smtplib.SMTP.has_extn
        monkeypatch.setattr(
            smtplib.SMTP, "has_extn", lambda self, name: name == "pipelining" or original(self, name)
        )
    return on


def test_pipelined_send_raw_delivers_the_exact_bytes(smtp_sink, pipelining):
    transport = SMTPTransport(smtp_sink.url)
    try:
        for rcpt in ("b@example.com", "c@example.com", "d@example.com"):
            transport.send_raw("bounces@store.example", [rcpt], DATA)
    finally:
        transport.close()
    assert smtp_sink.take_raw() == [DATA, DATA, DATA]


@pytest.mark.parametrize(
    "handler, code, temporary",
    [
        (FaultyHandler(refuse={"gone@example.com"}), 550, False),
        (FaultyHandler(seed=1, temporary_rate=2.0), 451, True),
    ],
)
def test_pipelined_refusals_leave_the_connection_usable(handler, code, temporary, pipelining):
    controller = start_faulty_smtp(_free_port(), handler)
    transport = SMTPTransport(f"smtp://127.0.0.1:{controller.port}")
    try:
        with pytest.raises(TransportError) as info:
            transport.send_raw("bounces@store.example", ["gone@example.com"], DATA)
        assert info.value.code == code and info.value.temporary is temporary
        if code == 550:  # every answer of the pipelined group was read: the next message goes through
            transport.send_raw("bounces@store.example", ["fine@example.com"], DATA)
            assert handler.counts() == {"fine@example.com": 1}
    finally:
        transport.close()
        controller.stop()


@pytest.mark.parametrize(
    "data, wire",
    [
        (b"a\r\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
        (b".first\r\n..two\r\n", b"..first\r\n...two\r\n.\r\n"),
        (b"no final newline", b"no final newline\r\n.\r\n"),
        (b"a.\r\nb", b"a.\r\nb\r\n.\r\n"),
    ],
)
def test_dot_stuffing_doubles_every_leading_dot_and_ends_the_body(data, wire):
    from newsletter.mail.transports import _dot_stuffed

    assert _dot_stuffed(data) == wire


@pytest.mark.parametrize("pipelining", [False, True], indirect=True)
def test_non_ascii_address_on_a_relay_without_smtputf8_is_a_permanent_refusal(pipelining):
    handler = FaultyHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port(), enable_SMTPUTF8=False)
    controller.start()
    transport = SMTPTransport(f"smtp://127.0.0.1:{controller.port}")
    try:
        with pytest.raises(TransportError) as info:
            transport.send_raw("bounces@store.example", ["jörg@example.com"], DATA)
        assert str(info.value) == NO_SMTPUTF8 and info.value.temporary is False
        transport.send_raw("bounces@store.example", ["fine@example.com"], DATA)  # nothing half-sent
        assert handler.counts() == {"fine@example.com": 1}
    finally:
        transport.close()
        controller.stop()
