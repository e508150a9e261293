"""Transports behind one interface: SMTP for real use, a Maildir outbox as the default."""

from __future__ import annotations

import logging
import mailbox
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from newsletter.core.config import Settings

log = logging.getLogger(__name__)


class TransportError(Exception):
    """A message could not be handed over; ``temporary`` says whether a retry may help."""

    def __init__(self, message: str, *, temporary: bool, code: int | None = None, uncertain: bool = False):
        super().__init__(message)
        self.temporary = temporary
        self.code = code
        #: the connection broke inside DATA: the message may have been delivered
        self.uncertain = uncertain


#: Why a message to or from a non-ASCII address cannot go through this relay (RFC 6531).
NO_SMTPUTF8 = "the relay does not offer SMTPUTF8, needed for a non-ASCII address"


class Transport(Protocol):
    def send(self, message: EmailMessage, envelope_from: str | None = None) -> None: ...

    def send_raw(self, envelope_from: str, recipients: list[str], data: bytes) -> None: ...

    def close(self) -> None: ...


def recipients_of(message: EmailMessage) -> list[str]:
    return [addr for _name, addr in getaddresses(message.get_all("To", []) + message.get_all("Cc", []))]


class MaildirTransport:
    """Writes each message into a Maildir folder (readable by any mail client)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._box = mailbox.Maildir(self.path, create=True)

    def send(self, message: EmailMessage, envelope_from: str | None = None) -> None:
        if envelope_from:  # what a delivering MTA writes at the top: the bounce address, visible
            del message["Return-Path"]
            message["Return-Path"] = f"<{envelope_from}>"
        self._box.add(message.as_bytes())

    def send_raw(self, envelope_from: str, recipients: list[str], data: bytes) -> None:
        """Store a message that is already complete bytes (campaign mail), under its Return-Path."""
        self._box.add(f"Return-Path: <{envelope_from}>\r\n".encode() + data if envelope_from else data)

    def close(self) -> None:
        pass


class SMTPTransport:
    """One reused SMTP connection with timeouts, STARTTLS or implicit TLS, and auth."""

    def __init__(self, url: str, timeout: float = 30):
        parts = urlsplit(url)
        options = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
        self.implicit_tls = parts.scheme == "smtps"
        self.starttls = options.get("starttls", "false") in {"1", "true", "yes"}
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout
        self.verify = options.get("verify", "true") not in {"0", "false", "no"}
        self._conn: smtplib.SMTP | None = None

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> smtplib.SMTP:
        try:
            if self.implicit_tls:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self._tls_context()
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                if self.starttls:
                    conn.starttls(context=self._tls_context())
            if self.username:
                conn.login(self.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise TransportError(f"SMTP login refused: {exc.smtp_code}", temporary=False) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {exc}", temporary=True) from exc
        return conn

    def send(self, message: EmailMessage, envelope_from: str | None = None) -> None:
        """Send one message (MAIL FROM: ``envelope_from``, else the From address), reconnecting once."""
        self._deliver(
            lambda conn: conn.send_message(message, from_addr=envelope_from, to_addrs=recipients_of(message))
        )

    def send_raw(self, envelope_from: str, recipients: list[str], data: bytes) -> None:
        """Send a complete message as bytes (CRLF, already encoded) on the kept connection.

        With a relay that offers PIPELINING (RFC 2920: Postfix, most services), MAIL, RCPT
        and DATA go out in one write: two round trips per message instead of four. A
        connection found dead before the message body is reopened once (nothing was handed
        over). One lost *during* the body may have delivered it: that raises an
        ``uncertain`` TransportError, never a silent retry that could deliver it twice.
        """
        options = ["SMTPUTF8"] if not all(a.isascii() for a in [envelope_from, *recipients]) else []
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            try:
                conn.ehlo_or_helo_if_needed()
                if options and not conn.has_extn("smtputf8"):
                    raise TransportError(NO_SMTPUTF8, temporary=False)
                if conn.has_extn("pipelining"):
                    self._pipelined_envelope(conn, envelope_from, recipients, options)
                else:
                    self._envelope(conn, envelope_from, recipients, options)
                    code, answer = conn.docmd("DATA")
                    if code != 354:
                        self._reset(conn, code)
                        raise TransportError(
                            f"DATA refused: {code} {answer!r}", temporary=400 <= code < 500, code=code
                        )
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self._drop()
                if attempt == 2:
                    raise TransportError(f"connection lost: {exc}", temporary=True) from exc
                continue
            try:
                conn.send(_dot_stuffed(data))
                code, answer = conn.getreply()
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self._drop()
                raise TransportError(
                    f"connection lost during DATA, the relay may have the message: {exc}",
                    temporary=False,
                    uncertain=True,
                ) from exc
            if code != 250:
                if code == 421:
                    self._drop()
                raise TransportError(
                    f"SMTP {code} after DATA: {answer!r}", temporary=400 <= code < 500, code=code
                )
            return

    def _pipelined_envelope(
        self, conn: smtplib.SMTP, sender: str, recipients: list[str], options: list[str]
    ) -> None:
        """MAIL, RCPT... and DATA in one write; every answer read; TransportError unless DATA got 354."""
        esmtp = " SMTPUTF8" if options else ""
        commands = [f"MAIL FROM:{smtplib.quoteaddr(sender)}{esmtp}"]
        commands += [f"RCPT TO:{smtplib.quoteaddr(r)}" for r in recipients]
        commands.append("DATA")
        conn.send("".join(f"{c}\r\n" for c in commands).encode("utf-8" if esmtp else "ascii"))
        answers = [conn.getreply() for _ in commands]
        mail, rcpts, data = answers[0], answers[1:-1], answers[-1]
        refused = mail if mail[0] != 250 else next((a for a in rcpts if a[0] not in (250, 251)), None)
        if refused is None and data[0] == 354:
            return
        if data[0] == 354:  # the relay wants a body anyway: send an empty one, then forget it
            conn.send(b".\r\n")
            conn.getreply()
        code, answer = refused or data
        self._reset(conn, code)
        what = "MAIL FROM" if refused is mail else ("recipient" if refused else "DATA")
        raise TransportError(f"{what} refused: {code} {answer!r}", temporary=400 <= code < 500, code=code)

    def _envelope(self, conn: smtplib.SMTP, sender: str, recipients: list[str], options: list[str]) -> None:
        """MAIL FROM and RCPT TO; a refusal becomes TransportError (after RSET the connection stays)."""
        code, answer = conn.mail(sender, options)
        if code != 250:
            self._reset(conn, code)
            raise TransportError(
                f"MAIL FROM refused: {code} {answer!r}", temporary=400 <= code < 500, code=code
            )
        for recipient in recipients:
            code, answer = conn.rcpt(recipient)
            if code not in (250, 251):
                self._reset(conn, code)
                raise TransportError(
                    f"recipient refused: {code} {answer!r}", temporary=400 <= code < 500, code=code
                )

    def _reset(self, conn: smtplib.SMTP, code: int) -> None:
        """After a refusal: RSET to reuse the connection, or drop it (421, or RSET failed)."""
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()
            return
        if code == 421:
            self._drop()

    def _deliver(self, transaction: Callable[[smtplib.SMTP], object]) -> None:
        """Run one SMTP transaction; map the server's answers to TransportError (4xx: temporary)."""
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect()
            try:
                transaction(self._conn)
                return
            except smtplib.SMTPNotSupportedError as exc:
                # smtplib refuses before MAIL FROM: the connection stays usable
                raise TransportError(NO_SMTPUTF8, temporary=False) from exc
            except smtplib.SMTPRecipientsRefused as exc:
                code, answer = next(iter(exc.recipients.values()))
                raise TransportError(
                    f"recipient refused: {code} {_text(answer)}", temporary=400 <= code < 500, code=code
                ) from exc
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421:
                    self._drop()
                raise TransportError(
                    f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}",
                    temporary=400 <= exc.smtp_code < 500,
                    code=exc.smtp_code,
                ) from exc
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self._drop()
                if attempt == 2:
                    raise TransportError(f"connection lost: {exc}", temporary=True) from exc

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self._drop()


def _text(answer: bytes | str) -> str:
    """A relay's answer as one line of text."""
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)
    return " ".join(text.split())


def _dot_stuffed(data: bytes) -> bytes:
    """The message body as sent after DATA: leading dots doubled, CRLF, the final dot line."""
    # bytes.replace runs in C at memory speed; a regex over a 30 KB body cost more than the rest
    body = data.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


class SigningTransport:
    """Signs every message with DKIM (mail/dkim.py), then hands it to the transport below.

    Campaign mail arrives as finished bytes per recipient; transactional mail as a message,
    serialised here exactly as it goes out. A key that cannot be used (or a message that
    cannot be signed) fails that message with a one-line TransportError, never a traceback:
    temporary for the key (fix it and the retry goes out), permanent for the message.
    """

    def __init__(self, inner: Transport, settings: Settings):
        from newsletter.mail import dkim

        self.inner = inner
        self._error: str | None = None
        self._signer = None
        try:
            self._signer = dkim.signer_for(settings)
        except dkim.DKIMError as exc:
            self._error = str(exc)
            log.error("%s", exc)

    def _sign(self, data: bytes) -> bytes:
        if self._signer is None:
            raise TransportError(f"not sent: {self._error}", temporary=True)
        try:
            return self._signer.sign(data)
        except ValueError as exc:
            raise TransportError(f"cannot DKIM-sign the message: {exc}", temporary=False) from exc

    def send(self, message: EmailMessage, envelope_from: str | None = None) -> None:
        international = not all(a.isascii() for a in recipients_of(message) + [message.get("From", "")])
        data = message.as_bytes(policy=message.policy.clone(linesep="\r\n", utf8=international))
        sender = envelope_from or next(iter(a for _n, a in getaddresses(message.get_all("From", []))), "")
        self.inner.send_raw(sender, recipients_of(message), self._sign(data))

    def send_raw(self, envelope_from: str, recipients: list[str], data: bytes) -> None:
        self.inner.send_raw(envelope_from, recipients, self._sign(data))

    def close(self) -> None:
        self.inner.close()


def make_transport(settings: Settings) -> Transport:
    """The configured transport: SMTP when ``SMTP_URL`` is set, else the Maildir outbox;
    signing with DKIM when ``DKIM_SELECTOR`` is set."""
    inner: Transport
    if settings.smtp_url:
        inner = SMTPTransport(settings.smtp_url, timeout=settings.smtp_timeout)
    else:
        inner = MaildirTransport(settings.outbox_dir)
    return SigningTransport(inner, settings) if settings.dkim_selector else inner
