"""What the exchange with each partner came to, for the dashboard (admin/people.py): read-only.

Imports are recorded (``partner_imports``: file, when, channel, records and the import's report);
exports are not recorded anywhere yet, so the page shows the shares that would travel instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.core.keyset import Page, fetch_page
from newsletter.models import (
    OutboxEmail,
    Partner,
    PartnerImport,
    PartnerInvitation,
    PartnerShare,
    PartnerSuppression,
)


@dataclass(frozen=True)
class PartnerSummary:
    partner: Partner
    #: our subscribers who let us share their address with this partner (what an export sends)
    shares_granted: int
    #: ticked on the signup form, not confirmed yet
    shares_requested: int
    #: the partner's opt-outs we hold (never invited on its word)
    opt_outs: int
    imports: int
    last_import_at: datetime | None
    invitations_sent: int
    #: waiting in the outbox (Redis down, the worker behind)
    invitations_pending: int
    invitations_failed: int


def _counts(session: Session, query) -> dict[str, int]:
    return {partner_id: n for partner_id, n in session.execute(query)}


def summaries(session: Session) -> list[PartnerSummary]:
    """Every partner with its numbers, in id order: a handful of grouped queries, one per table."""
    partners = list(session.scalars(select(Partner).order_by(Partner.id)))
    group = PartnerShare.partner_id
    granted = _counts(session, select(group, func.count()).where(PartnerShare.granted).group_by(group))
    requested = _counts(
        session,
        select(group, func.count())
        .where(~PartnerShare.granted, PartnerShare.requested_at.is_not(None))
        .group_by(group),
    )
    opt_outs = _counts(
        session,
        select(PartnerSuppression.partner_id, func.count()).group_by(PartnerSuppression.partner_id),
    )
    imports = {
        pid: (n, last)
        for pid, n, last in session.execute(
            select(PartnerImport.partner_id, func.count(), func.max(PartnerImport.imported_at)).group_by(
                PartnerImport.partner_id
            )
        )
    }
    invitations: dict[str, dict[str, int]] = {}
    state = (
        select(
            PartnerInvitation.partner_id,
            OutboxEmail.sent_at.is_not(None).label("sent"),
            OutboxEmail.failed_at.is_not(None).label("failed"),
            func.count(),
        )
        .join(OutboxEmail, OutboxEmail.id == PartnerInvitation.outbox_id)
        .group_by(PartnerInvitation.partner_id, "sent", "failed")
    )
    for pid, sent, failed, n in session.execute(state):
        kind = "sent" if sent else "failed" if failed else "pending"
        counts = invitations.setdefault(pid, {})
        counts[kind] = counts.get(kind, 0) + n
    return [
        PartnerSummary(
            partner=p,
            shares_granted=granted.get(p.id, 0),
            shares_requested=requested.get(p.id, 0),
            opt_outs=opt_outs.get(p.id, 0),
            imports=imports.get(p.id, (0, None))[0],
            last_import_at=imports.get(p.id, (0, None))[1],
            invitations_sent=invitations.get(p.id, {}).get("sent", 0),
            invitations_pending=invitations.get(p.id, {}).get("pending", 0),
            invitations_failed=invitations.get(p.id, {}).get("failed", 0),
        )
        for p in partners
    ]


def imports(session: Session, *, after: int | None = None, before: int | None = None, size: int = 25) -> Page:
    """Files taken from partners, newest first (PartnerImport rows; a removed partner's stay)."""
    return fetch_page(
        session,
        select(PartnerImport),
        (PartnerImport.id,),
        PartnerImport.id,
        after=after,
        before=before,
        size=size,
        descending=True,
        id_of=lambda row: row.PartnerImport.id,
    )
