"""One parser for every report that reaches the bounce mailbox: DSNs, other bounces, ARF, auto-replies.

``parse(raw, settings, ...)`` turns the bytes of one message into a :class:`Report`: the signals
to record (at most one per report: with VERP each message has one recipient), or why there are
none. It never raises on bad input: too large, truncated, malformed or not a report at all is a
one-line reason and no signal.

How a report names its row, first found wins: the VERP tag of the address the report was sent
to (the envelope recipient; for an import the Delivered-To/X-Original-To/To headers), then the
VERP tag in the returned message's Return-Path, then our Message-ID in the returned message. A
tag is trusted only when its HMAC verifies (``mail/verp.read``); a tag that does not verify makes
the whole report ignored, so a forged bounce cannot fall back to something else.

Hard or soft (see :func:`classify`): 5.x.x on a failed recipient is hard, except what says
nothing bad about the address: mailbox full (5.2.2), mail system trouble (5.3.x), message too big
(5.3.4), content (5.6.x), policy and spam blocks (5.7.x) and expired/congested (5.4.5, 5.4.7)
count as soft, so the soft-bounce limit suppresses an address that keeps refusing us. 4.x.x on a
failed recipient (the MTA gave up) is soft. A "delayed" DSN is no signal at all: the MTA keeps
trying and sends a failure DSN if it gives up, so counting delays would count one problem twice.
"""

from __future__ import annotations

import email
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from email.errors import CloseBoundaryNotFoundDefect, StartBoundaryNotFoundDefect
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parsedate_to_datetime

from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.feedback.signals import Signal
from newsletter.mail import verp
from newsletter.models.feedback import SignalKind

log = logging.getLogger(__name__)
# flufl.bounce logs every detector it runs, and a traceback when one trips over odd input before
# raising (which parse() turns into a refusal): neither belongs in the engine's log
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

#: the largest report read (bounces carry the original message; 10 MB is plenty)
MAX_SIZE = 10 * 1024 * 1024

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_BASIC = re.compile(r"(?<![\d.])([45])\d\d(?=[ -]|$)", re.M)
_MESSAGE_ID = re.compile(r"^message-id:\s*(<[^<>\s]+>)", re.I | re.M)
#: words that name a missing mailbox whatever code the server chose
_NO_MAILBOX = re.compile(
    r"user unknown|unknown user|no such user|user does ?n[o']t exist|does not exist|recipient not found"
    r"|recipientnotfound|no mailbox|mailbox not found|invalid recipient|unknown recipient|account .*disabled",
    re.I,
)
_MAILBOX_FULL = re.compile(r"over ?quota|quota exceeded|mailbox (is )?full|insufficient storage", re.I)
_OUT_OF_OFFICE = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|answer)|out of (the )?office|ooo\b|away from|on vacation|vacation"
    r"|abwesenheit|automatische antwort|r[ée]ponse automatique|absence)",
    re.I,
)
_COMPLAINT_TYPES = {"abuse", "fraud", "virus", "other", "opt-out", "opt-out-list"}


@dataclass(frozen=True, slots=True)
class Report:
    """What one raw message turned out to be: signals to record, or why none."""

    #: "bounce", "complaint", "auto-reply", "delayed", "ignored" or "refused"
    what: str
    signals: tuple[Signal, ...] = ()
    #: one line: what was found, or why nothing is recorded
    reason: str = ""

    @property
    def refused(self) -> bool:
        return self.what == "refused"


def _refused(reason: str) -> Report:
    return Report("refused", reason=reason)


def _ignored(reason: str, what: str = "ignored") -> Report:
    return Report(what, reason=reason)


def parse(raw: bytes, settings: Settings, *, source: str = "smtp", envelope_to: Sequence[str] = ()) -> Report:
    """Read one report. ``envelope_to``: the RCPT TO addresses (unknown for an import: headers are used)."""
    if len(raw) > MAX_SIZE:
        return _refused(f"too large ({len(raw)} bytes; the limit is {MAX_SIZE})")
    if not raw.strip():
        return _refused("empty message")
    try:
        return _parse(raw, settings, source, list(envelope_to))
    except Exception as exc:  # noqa: BLE001 - bad input is a refusal, never a traceback
        log.debug("unreadable report", exc_info=True)
        return _refused(f"unreadable message ({type(exc).__name__})")


def _parse(raw: bytes, settings: Settings, source: str, envelope_to: list[str]) -> Report:
    # compat32 (the default): what flufl.bounce's detectors read; lenient with broken input
    msg = email.message_from_bytes(raw)
    if not msg.keys():
        return _refused("not an email message (no headers)")
    if _truncated(msg):
        return _refused("truncated: a MIME part has no closing boundary")
    status = _first_part(msg, "message/delivery-status")
    if status is not None:
        return _dsn(msg, status, settings, source, envelope_to)
    feedback = _first_part(msg, "message/feedback-report")
    if feedback is not None:
        return _arf(msg, feedback, settings, source, envelope_to)
    if _is_auto_reply(msg, strong_only=True):
        return _ignored("out-of-office or other auto-reply: not a bounce", "auto-reply")
    return _other_bounce(msg, settings, source, envelope_to)


# --- the kinds of report ------------------------------------------------------------------


def _dsn(msg: Message, status: Message, settings: Settings, source: str, envelope_to: list[str]) -> Report:
    """RFC 3464: the per-recipient blocks say what happened; the first failed one counts."""
    blocks = status.get_payload() if status.is_multipart() else _header_blocks(status.get_payload())
    recipients = [b for b in blocks[1:] if b.get("action") or b.get("final-recipient")] or [
        b for b in blocks if b.get("action")
    ]
    if not recipients:
        return _refused("DSN without a per-recipient block (Action/Status)")
    failed = [b for b in recipients if _text(b.get("action")).lower().startswith(("fail", "error"))]
    if not failed:
        actions = sorted({_text(b.get("action")).lower().split()[0] for b in recipients if b.get("action")})
        if "delayed" in actions:
            return _ignored("delayed DSN: the MTA keeps trying; not a bounce", "delayed")
        return _ignored(f"DSN reports no failure (Action: {', '.join(actions) or 'none'})")
    block = failed[0]
    diagnostic = _one_line(_text(block.get("diagnostic-code")))
    code = _status_code(_text(block.get("status")), diagnostic)
    recipient = _address_field(block.get("final-recipient") or block.get("original-recipient"))
    original = _original(msg)
    kind = classify(code, diagnostic)
    return _signal(
        "bounce", kind, msg, settings, source, envelope_to, original, code, diagnostic or None, recipient
    )


def _arf(msg: Message, part: Message, settings: Settings, source: str, envelope_to: list[str]) -> Report:
    """RFC 5965: a complaint about the message included in the report (Original-Rcpt-To is not trusted)."""
    fields = part.get_payload(0) if part.is_multipart() else HeaderParser().parsestr(_decoded(part))
    feedback_type = _text(fields.get("feedback-type")).strip().lower()
    if not feedback_type:
        return _refused("ARF report without Feedback-Type")
    if feedback_type not in _COMPLAINT_TYPES:
        return _ignored(f"ARF Feedback-Type {feedback_type}: not a complaint")
    original = _original(msg)
    agent = _one_line(_text(fields.get("user-agent")))[:300] or None
    at = _when(fields.get("arrival-date") or fields.get("received-date"))
    return _signal(
        "complaint",
        SignalKind.COMPLAINT,
        msg,
        settings,
        source,
        envelope_to,
        original,
        None,
        f"ARF {feedback_type}" + (f" from {agent}" if agent else ""),
        None,
        at=at,
    )


def _other_bounce(msg: Message, settings: Settings, source: str, envelope_to: list[str]) -> Report:
    """Not a DSN: flufl.bounce's detectors (Exim, qmail, Postfix, ... text formats), then our codes."""
    from flufl.bounce import all_failures

    if not _text(msg.get("from")).strip():  # every MTA names itself; some detectors need it
        return _ignored("not a bounce or feedback report (no From header)")
    temporary, permanent = all_failures(msg)
    if permanent:
        body = _body_text(msg)
        recipient = sorted(permanent)[0].decode("ascii", "replace")
        line = _line_with_code(body, recipient)
        code = _status_code("", line)
        kind = classify(code or "5.0.0", line)
        return _signal(
            "bounce", kind, msg, settings, source, envelope_to, None, code, line or None, recipient
        )
    if temporary:
        return _ignored("delivery warning: the MTA keeps trying; not a bounce", "delayed")
    if _is_auto_reply(msg, strong_only=False):
        return _ignored("auto-reply: not a bounce", "auto-reply")
    return _ignored("not a bounce or feedback report")


def classify(code: str | None, diagnostic: str = "") -> SignalKind:
    """Hard or soft, from the status code (enhanced or basic) and, for a few codes, the server's words."""
    text = diagnostic or ""
    if not code:
        return SignalKind.BOUNCE_HARD  # the MTA gave up without saying why: permanent
    if code.startswith("4"):
        return SignalKind.BOUNCE_SOFT
    if "." not in code:  # a basic SMTP reply code
        full = code == "552" or _MAILBOX_FULL.search(text)
        return SignalKind.BOUNCE_SOFT if full else SignalKind.BOUNCE_HARD
    _, subject, detail = (int(x) for x in code.split("."))
    if _MAILBOX_FULL.search(text) and not _NO_MAILBOX.search(text):
        return SignalKind.BOUNCE_SOFT
    not_the_address = (subject, detail) in {(2, 2), (4, 5), (4, 7)} or subject in (
        3,
        6,
        7,
    )  # the address exists: full mailbox, their system, our message or our reputation
    if not_the_address and not _NO_MAILBOX.search(text):
        return SignalKind.BOUNCE_SOFT
    return SignalKind.BOUNCE_HARD


# --- naming the row -------------------------------------------------------------------------


def _signal(
    what: str,
    kind: SignalKind,
    msg: Message,
    settings: Settings,
    source: str,
    envelope_to: list[str],
    original: Message | None,
    code: str | None,
    diagnostic: str | None,
    recipient: str | None,
    *,
    at=None,
) -> Report:
    naming = _naming(msg, settings, envelope_to, original)
    if isinstance(naming, str):
        return _ignored(naming)
    label = f"{kind.value}" + (f" {code}" if code else "")
    signal = Signal(
        kind,
        source,
        **naming,
        recipient=recipient,
        status_code=code,
        diagnostic=diagnostic[:2000] if diagnostic else None,
        provider_event_id=_report_id(msg),
        at=at or _when(msg.get("date")),
    )
    return Report(what, (signal,), label)


def _naming(msg: Message, settings: Settings, envelope_to: list[str], original: Message | None):
    """``{"verp": ref}`` or ``{"message_id": id}``; or, as a string, why the report names nothing."""
    candidates = envelope_to or [
        a for h in ("delivered-to", "x-original-to", "to") for a in _addresses(msg.get_all(h, []))
    ]
    returned = _addresses(original.get_all("return-path", [])) if original is not None else []
    for group in (candidates, returned):
        tagged = [a for a in group if _is_tagged(settings, a)]
        if tagged:
            for address in tagged:
                ref = verp.read(settings, address)
                if ref is not None:
                    return {"verp": ref}
            log.warning("report to %s: VERP tag does not verify; ignored", tagged[0])
            return f"VERP tag does not verify ({tagged[0]})"
    message_id = _original_message_id(msg, original)
    if message_id:
        return {"message_id": message_id}
    return "names no message (no VERP tag, no original Message-ID)"


def _is_tagged(settings: Settings, address: str) -> bool:
    """A bounces+TAG address of ours (any plus address when no BOUNCE_ADDRESS is set)."""
    local, _, domain = address.strip().strip("<>").lower().rpartition("@")
    base, plus, tag = local.partition("+")
    if not plus or not tag:
        return False
    if not settings.bounce_address:
        return True
    our_local, _, our_domain = settings.bounce_address.lower().rpartition("@")
    return base == our_local and domain == our_domain


def _original_message_id(msg: Message, original: Message | None) -> str | None:
    if original is not None and original.get("message-id"):
        match = re.search(r"<[^<>\s]+>", _text(original.get("message-id")))
        if match:
            return match.group(0)
    own = _text(msg.get("message-id")).strip()
    for found in _MESSAGE_ID.findall(_body_text(msg, everything=True)):
        if found != own:
            return found
    return None


def _report_id(msg: Message) -> str:
    """The report's own Message-ID (a re-delivered report is the same event), else a hash of it."""
    own = _one_line(_text(msg.get("message-id")))
    if own:
        return own[:255]
    return "sha256:" + hashlib.sha256(msg.as_bytes()).hexdigest()


# --- reading the message -------------------------------------------------------------------


def _truncated(msg: Message) -> bool:
    return any(
        isinstance(d, CloseBoundaryNotFoundDefect | StartBoundaryNotFoundDefect)
        for part in msg.walk()
        for d in part.defects
    )


def _first_part(msg: Message, content_type: str) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _original(msg: Message) -> Message | None:
    """The returned or reported message (its headers at least), if the report includes it."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822" and part.is_multipart():
            return part.get_payload(0)
        if ctype in ("text/rfc822-headers", "text/rfc822-header"):
            return HeaderParser().parsestr(_decoded(part))
    return None


def _header_blocks(payload) -> list[Message]:
    text = payload if isinstance(payload, str) else ""
    return [HeaderParser().parsestr(block) for block in re.split(r"\r?\n\s*\r?\n", text) if block.strip()]


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", "replace")
    return str(part.get_payload() or "")


def _body_text(msg: Message, everything: bool = False) -> str:
    """The text parts (and, with ``everything``, the included headers) as one string."""
    chunks = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype.startswith("text/") or (everything and ctype.startswith("message/")):
            try:
                chunks.append(_decoded(part))
            except LookupError:  # an unknown charset
                chunks.append(_text(part.get_payload()))
    return "\n".join(chunks)


def _line_with_code(body: str, recipient: str) -> str:
    """The bounce's line that gives the reason: the first with a status code after the address."""
    start = max(body.lower().find(recipient.lower()), 0)
    tail = body[start:]
    for line in tail.splitlines():
        if _ENHANCED.search(line) or _BASIC.search(line):
            return _one_line(line)[:500]
    return ""


def _status_code(status: str, diagnostic: str) -> str | None:
    """The enhanced status code (a generic x.0.0 gives way to the diagnostic's), else a basic one."""
    found = _ENHANCED.search(status or "")
    better = _ENHANCED.search(diagnostic or "")
    if found and (found.group(2, 3) != ("0", "0") or not better):
        return found.group(0)
    if better:
        return better.group(0)
    basic = _BASIC.search(diagnostic or "")
    return basic.group(0) if basic else (found.group(0) if found else None)


def _address_field(value) -> str | None:
    text = _text(value)
    address = text.partition(";")[2].strip() if ";" in text else text.strip()
    return address.strip("<>")[:320] or None


def _addresses(values) -> list[str]:
    return [a for _name, a in getaddresses([_text(v) for v in values]) if "@" in a]


def _is_auto_reply(msg: Message, strong_only: bool) -> bool:
    """RFC 3834 and the de-facto headers; without ``strong_only`` any Auto-Submitted but "no" counts."""
    precedence = _text(msg.get("precedence")).strip().lower()
    auto = _text(msg.get("auto-submitted")).strip().lower()
    if precedence == "auto_reply" or any(
        msg.get(h) for h in ("x-autoreply", "x-autorespond", "x-autoresponder")
    ):
        return True
    if _OUT_OF_OFFICE.search(_text(msg.get("subject"))):
        return True
    return not strong_only and bool(auto) and auto != "no"


def _when(value):
    """A report's date as naive UTC, if it is a real date in the past; else None (now)."""
    try:
        moment = parsedate_to_datetime(_text(value)) if value else None
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment if moment <= clock.now() else None


def _text(value) -> str:
    """A header value as text (compat32 may hand over a Header object for 8-bit input)."""
    if value is None:
        return ""
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _one_line(text: str) -> str:
    return " ".join(text.split())
