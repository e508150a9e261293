"""Amazon SES notifications (inside a verified SNS message) as signals.

Both forms: the identity notifications (``notificationType``) and event publishing
(``eventType``). The message is named by our VERP envelope sender (``mail.source``) first, then
by our Message-ID from the headers (when SES includes them); ``mail.messageId`` is SES's own id
and names nothing of ours.
"""

from __future__ import annotations

from typing import Any

from newsletter.core.config import Settings
from newsletter.feedback.signals import Signal
from newsletter.mail import verp
from newsletter.models import SignalKind

SOURCE = "webhook:ses"
_BOUNCE = {"Permanent": SignalKind.BOUNCE_HARD, "Transient": SignalKind.BOUNCE_SOFT}


def text(value: Any, limit: int) -> str | None:
    """A provider's string as we store it: no NUL or other control characters (PostgreSQL
    refuses NUL), at most ``limit`` characters; None when nothing is left."""
    if value is None or value == "":
        return None
    cleaned = "".join(ch if ch >= " " or ch in "\t" else " " for ch in str(value)).strip()
    return cleaned[:limit] or None


class Malformed(Exception):
    """The SES event lacks a field we need; the message names it."""


def _message_id(mail: dict) -> str | None:
    for header in mail.get("headers") or ():
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
            return text(header.get("value"), 998)
    common = mail.get("commonHeaders")
    value = common.get("messageId") if isinstance(common, dict) else None
    return text(value, 998) if isinstance(value, str) else None


def _list(value: Any, name: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise Malformed(f"{name} is missing or not a list of objects")
    return value


def signals(settings: Settings, event: Any, sns_message_id: str) -> list[Signal]:
    """The signals one SES event carries (one per recipient); [] for kinds we do not act on."""
    if not isinstance(event, dict):
        raise Malformed("Message is not an SES event (a JSON object)")
    kind = event.get("notificationType") or event.get("eventType")
    if not isinstance(kind, str):
        raise Malformed("notificationType or eventType is missing")
    mail = event.get("mail")
    if not isinstance(mail, dict):
        raise Malformed("mail is missing")
    source = mail.get("source")
    ref = verp.read(settings, source) if isinstance(source, str) else None
    message_id = None if ref else _message_id(mail)
    event_id = text(sns_message_id, 200) or "?"
    found: list[tuple[SignalKind, dict, str | None, str | None]] = []
    if kind == "Bounce":
        bounce = event.get("bounce")
        if not isinstance(bounce, dict):
            raise Malformed("bounce is missing")
        signal_kind = _BOUNCE.get(bounce.get("bounceType"), SignalKind.BOUNCE_SOFT)  # Undetermined: soft
        for entry in _list(bounce.get("bouncedRecipients"), "bounce.bouncedRecipients"):
            note = entry.get("diagnosticCode") or f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}"
            found.append((signal_kind, entry, entry.get("status"), note))
    elif kind == "Complaint":
        complaint = event.get("complaint")
        if not isinstance(complaint, dict):
            raise Malformed("complaint is missing")
        note = f"feedback type: {complaint.get('complaintFeedbackType') or 'not given'}"
        for entry in _list(complaint.get("complainedRecipients"), "complaint.complainedRecipients"):
            found.append((SignalKind.COMPLAINT, entry, None, note))
    elif kind == "Delivery":
        delivery = event.get("delivery")
        if not isinstance(delivery, dict):
            raise Malformed("delivery is missing")
        recipients = delivery.get("recipients")
        if not isinstance(recipients, list):
            raise Malformed("delivery.recipients is missing")
        for address in recipients:
            entry = {"emailAddress": address}
            found.append((SignalKind.DELIVERED, entry, None, delivery.get("smtpResponse")))
    return [
        Signal(
            signal_kind,
            SOURCE,
            verp=ref,
            message_id=message_id,
            recipient=text(entry.get("emailAddress"), 320),
            status_code=text(status, 16),
            diagnostic=text(note, 2000),
            provider_event_id=event_id if i == 0 else f"{event_id}:{i}",
        )
        for i, (signal_kind, entry, status, note) in enumerate(found)
    ]
