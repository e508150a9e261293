"""The one message builder: multipart/alternative text + HTML, safe headers, short lines."""

from __future__ import annotations

import email.policy
import re
from datetime import UTC
from email.header import decode_header
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from newsletter.core import clock

#: RFC 5322 line limit is 998 octets; we fold at 78 and encode bodies so none comes near it.
POLICY = email.policy.SMTP.clone(max_line_length=78)
_ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=")


class HeaderInjection(ValueError):
    """A header value carried a line break, raw or hidden in an encoded word."""


def check_header_value(name: str, value: str) -> str:
    """Refuse CR, LF (and other line breaks) in a header value, including encoded ones.

    CPython's EmailMessage let ``\\n`` and ``=?UTF-8?Q?=0A?=`` through (CVE-2024-6923),
    so we check ourselves before the value reaches the email package.
    """
    if any(ch in value for ch in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00"):
        raise HeaderInjection(f"{name} header contains a line break")
    for word in _ENCODED_WORD.findall(value):
        try:
            parts = decode_header(word)
        except Exception:  # noqa: BLE001 - malformed encoded word: refuse it
            raise HeaderInjection(f"{name} header contains a malformed encoded word") from None
        for raw, charset in parts:
            text = raw.decode(charset or "ascii", "replace") if isinstance(raw, bytes) else raw
            if "\r" in text or "\n" in text or "\x00" in text:
                raise HeaderInjection(f"{name} header contains an encoded line break")
    return value


def domain_of(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "localhost"


def build_message(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """Build a ready-to-send message; every header value is checked for injection."""
    msg = EmailMessage(policy=POLICY)
    all_headers = {
        "From": sender,
        "To": to,
        "Subject": subject,
        "Date": format_datetime(clock.now().replace(tzinfo=UTC)),
        "Message-ID": make_msgid(domain=domain_of(sender)),
        "MIME-Version": "1.0",
        **(headers or {}),
    }
    for name, value in all_headers.items():
        check_header_value(name, name)
        msg[name] = check_header_value(name, value)
    # quoted-printable keeps every body line short whatever the template produced
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


def preview_files(data: bytes) -> dict[str, bytes]:
    """A whole message as the files a preview writes: ``.eml`` as sent, its ``.html`` and ``.txt`` parts."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    return {
        ".eml": data,
        ".html": message.get_body(("html",)).get_content().encode("utf-8"),
        ".txt": message.get_body(("plain",)).get_content().encode("utf-8"),
    }
