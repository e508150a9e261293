"""The daily cap on invitations sent because of one partner (PARTNER_INVITES_PER_DAY).

Counted in SQL (``partner_invite_days``) in the transaction that claims the invitation, so the
cap holds exactly across any number of workers and without Redis. An invitation over the cap
is not claimed: it is held (``outbox_emails.not_before``) until midnight UTC, when the outbox
sweep sends it like any row without a live job; it is never given up for it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.core.db import dialect_insert
from newsletter.models import PartnerInvitation
from newsletter.models.partners import PartnerInviteDay


def next_day(now: datetime) -> datetime:
    """Midnight UTC after ``now``: when a held invitation may go."""
    return datetime.combine(now.date() + timedelta(days=1), datetime.min.time())


def partner_of(session: Session, outbox_id: int) -> str | None:
    """The partner whose word an invitation was sent on (None: not a partner invitation)."""
    return session.scalar(
        select(PartnerInvitation.partner_id).where(PartnerInvitation.outbox_id == outbox_id)
    )


def take_invite_slot(session: Session, partner_id: str, day: date, cap: int) -> bool:
    """Count one invitation against the partner's day, unless the day is full (then False).

    One conditional UPDATE on the day's row: concurrent claims queue on its row lock and the
    count never passes ``cap``.
    """
    session.execute(
        dialect_insert(session, PartnerInviteDay)
        .values(partner_id=partner_id, day=day, sent=0)
        .on_conflict_do_nothing(index_elements=["partner_id", "day"])
    )
    taken = session.execute(
        update(PartnerInviteDay)
        .where(
            PartnerInviteDay.partner_id == partner_id,
            PartnerInviteDay.day == day,
            PartnerInviteDay.sent < cap,
        )
        .values(sent=PartnerInviteDay.sent + 1)
    )
    return taken.rowcount == 1


def give_back(session: Session, outbox) -> None:
    """A claimed partner invitation that was not sent (a temporary failure): its slot is free again.

    The slot is the day of the claim; after a worker died mid-send it stays taken (the cap may
    then send fewer, never more).
    """
    partner_id = partner_of(session, outbox.id) if outbox.kind == "partner_invite" else None
    if partner_id is None or outbox.claimed_at is None:
        return
    session.execute(
        update(PartnerInviteDay)
        .where(
            PartnerInviteDay.partner_id == partner_id,
            PartnerInviteDay.day == outbox.claimed_at.date(),
            PartnerInviteDay.sent > 0,
        )
        .values(sent=PartnerInviteDay.sent - 1)
    )
