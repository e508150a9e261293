"""Withdrawal records: a person withdrew their consent to be shared with the partner.

The sender adds ``{"withdrawn": "<sha256 of the address>"}`` to a contacts file for every person
the partner received (``partner_shares.disclosed_at``) whose share has been withdrawn since.
The receiver (``apply``, called per chunk by ``exchange.import_contacts``):

- stores the hash as the partner's opt-out (``partner_suppressions``): never invited on that
  partner's word again, never exported to that partner;
- cancels the unsent invitations *from that partner* of a person who is still pending and never
  confirmed here (their only basis here was the partner's word, which is now withdrawn);
- keeps a person who confirmed here as they are: their own confirmation is their consent here;
- appends a ``partner_withdrawn`` ledger event for anyone it has, saying what it did.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.db import dialect_insert
from newsletter.models import (
    ConsentAction,
    ConsentEvent,
    OutboxEmail,
    OutboxKind,
    PartnerInvitation,
    PartnerShare,
    PartnerSuppression,
    Subscriber,
    SubscriberStatus,
)
from newsletter.partners.files import FileRefused

KEY = "withdrawn"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PAGE = 1000


# --- sending ---------------------------------------------------------------------------------


def to_tell(session: Session, partner_id: str, since: datetime | None) -> Iterator[str]:
    """Address hashes of people the partner received who withdrew (since ``since``, if given)."""
    last = 0
    while True:
        statement = (
            select(PartnerShare.subscriber_id, Subscriber.email_hash)
            .join(Subscriber, Subscriber.id == PartnerShare.subscriber_id)
            .where(
                PartnerShare.partner_id == partner_id,
                PartnerShare.granted.is_(False),
                PartnerShare.disclosed_at.is_not(None),
                PartnerShare.subscriber_id > last,
            )
            .order_by(PartnerShare.subscriber_id)
            .limit(_PAGE)
        )
        if since is not None:
            statement = statement.where(PartnerShare.updated_at >= since)
        page = session.execute(statement).all()
        if not page:
            return
        for _, email_hash in page:
            yield email_hash
        last = page[-1][0]


# --- receiving -------------------------------------------------------------------------------


def check(line: int, value: Any) -> bool:
    """True if the record is a well-formed withdrawal record; FileRefused if it is a malformed one."""
    if not isinstance(value, dict) or KEY not in value:
        return False
    if set(value) != {KEY} or not isinstance(value[KEY], str) or not _HEX64.fullmatch(value[KEY]):
        raise FileRefused(f"line {line}: a withdrawal record is {{{KEY!r}: 64 lower-case hex digits}}")
    return True


def apply(
    session: Session, partner_id: str, import_id: int, chunk: list[tuple[int, Any]]
) -> tuple[list[tuple[int, Any]], int]:
    """Apply the chunk's withdrawal records (checked already); returns the other records and how many."""
    hashes = {value[KEY]: line for line, value in chunk if isinstance(value, dict) and KEY in value}
    if not hashes:
        return chunk, 0
    rest = [(line, value) for line, value in chunk if not (isinstance(value, dict) and KEY in value)]
    now = clock.now()
    session.execute(
        dialect_insert(session, PartnerSuppression)
        .values([{"partner_id": partner_id, "email_hash": h, "received_at": now} for h in hashes])
        .on_conflict_do_nothing(index_elements=["partner_id", "email_hash"])
    )
    people = session.execute(
        select(Subscriber.id, Subscriber.email_hash, Subscriber.status, Subscriber.confirmed_at).where(
            Subscriber.email_hash.in_(list(hashes))
        )
    ).all()
    only_on_their_word = [sid for sid, _, status, confirmed in people if _on_their_word(status, confirmed)]
    cancelled: set[int] = set()
    if only_on_their_word:
        rows = session.execute(
            select(OutboxEmail.id, OutboxEmail.subscriber_id)
            .join(PartnerInvitation, PartnerInvitation.outbox_id == OutboxEmail.id)
            .where(
                PartnerInvitation.partner_id == partner_id,
                OutboxEmail.subscriber_id.in_(only_on_their_word),
                OutboxEmail.kind == OutboxKind.PARTNER_INVITE,
                OutboxEmail.sent_at.is_(None),
                OutboxEmail.failed_at.is_(None),
            )
        ).all()
        if rows:
            # failed_at is checked again after a worker's claim, so a row taken meanwhile is not sent
            session.execute(
                update(OutboxEmail)
                .where(OutboxEmail.id.in_([oid for oid, _ in rows]), OutboxEmail.sent_at.is_(None))
                .values(failed_at=now, last_error=f"partner {partner_id}: the person withdrew the consent")
            )
            cancelled = {sid for _, sid in rows}
    for sid, email_hash, status, confirmed in people:
        if _on_their_word(status, confirmed):
            outcome = "invitation cancelled" if sid in cancelled else "not invited on its word again"
        else:
            outcome = "kept: the person's own consent here stands"
        session.add(
            ConsentEvent(
                subscriber_id=sid,
                action=ConsentAction.PARTNER_WITHDRAWN,
                topics=[],
                occurred_at=now,
                source=f"partner:{partner_id}"[:100],
                details={
                    "partner": partner_id,
                    "import_id": import_id,
                    "file_line": hashes[email_hash],
                    "outcome": outcome,
                },
            )
        )
    return rest, len(hashes)


def _on_their_word(status: SubscriberStatus, confirmed_at: datetime | None) -> bool:
    """Pending and never confirmed here: the partner's word is all we hold them on."""
    return status == SubscriberStatus.PENDING and confirmed_at is None
