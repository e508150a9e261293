"""One signal about a sent message, as every way in (SMTP, import, webhook, web) hands it over."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from newsletter.mail.verp import VerpRef
from newsletter.models.feedback import SignalKind


@dataclass(frozen=True, slots=True)
class Signal:
    """What happened, and how it names its message.

    A signal names its row by ``delivery_id``/``outbox_id`` (the caller verified them: a signed
    click link), by a verified VERP tag, or by our own Message-ID (random, so unguessable), in
    that order. ``provider_event_id`` makes a replay harmless: the same id from the same
    source is recorded once.
    """

    kind: SignalKind
    #: "smtp", "import", "webhook:ses", "webhook:mailgun", "web"
    source: str
    delivery_id: int | None = None
    outbox_id: int | None = None
    verp: VerpRef | None = None
    message_id: str | None = None
    #: the address the report is about, when it names one (kept in the diagnostic, never trusted)
    recipient: str | None = None
    status_code: str | None = None
    diagnostic: str | None = None
    provider_event_id: str | None = None
    at: datetime | None = None
    link: int | None = None
    user_agent: str | None = None
