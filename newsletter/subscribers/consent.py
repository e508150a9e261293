"""The consent ledger's events and their evidence: who asked, from where, and the wording shown."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.models import ConsentAction, ConsentEvent


@dataclass(frozen=True)
class Wording:
    """A text a person was shown: the ledger keeps its version label and SHA-256 (subscribers/wording.py)."""

    version: str
    text: str
    #: the language it is written in (None: not one of our files, e.g. an import's own wording)
    language: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RequestInfo:
    """Who asked, from where: the evidence that goes with every consent event."""

    ip: str | None
    user_agent: str | None
    source: str


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _evidence(text: str | None, length: int) -> str | None:
    """A header as the ledger keeps it: control characters (PostgreSQL refuses NUL) marked, cut to size."""
    return _CONTROL.sub("\ufffd", text)[:length] if text else None


def event_values(
    subscriber_id: int,
    action: ConsentAction,
    request: RequestInfo,
    *,
    topics: list[str] | None = None,
    wording: Wording | None = None,
    details: dict | None = None,
) -> dict:
    """The columns of one consent event, as the ledger keeps them."""
    return {
        "subscriber_id": subscriber_id,
        "action": action,
        "topics": sorted(topics or []),
        "occurred_at": clock.now(),
        "ip": (request.ip or None) and request.ip[:45],
        "user_agent": _evidence(request.user_agent, 500),
        "source": request.source[:100],
        "wording_version": wording.version if wording else None,
        "wording_hash": wording.sha256 if wording else None,
        "details": details or {},
    }


def record_event(
    session: Session,
    subscriber_id: int,
    action: ConsentAction,
    request: RequestInfo,
    *,
    topics: list[str] | None = None,
    wording: Wording | None = None,
    details: dict | None = None,
) -> ConsentEvent:
    """Append one event to the consent ledger."""
    values = event_values(subscriber_id, action, request, topics=topics, wording=wording, details=details)
    event = ConsentEvent(**values)
    session.add(event)
    return event


_APPEND = insert(ConsentEvent.__table__).returning(ConsentEvent.__table__.c.id)


def append_event(
    session: Session, subscriber_id: int, action: ConsentAction, request: RequestInfo, **kw
) -> int:
    """``record_event`` as one ``INSERT ... RETURNING id`` and no ORM object: the signup's hot path."""
    return (
        session.connection().execute(_APPEND, event_values(subscriber_id, action, request, **kw)).scalar_one()
    )
