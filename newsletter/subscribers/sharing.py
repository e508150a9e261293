"""Consent to share with a named partner, given on the signup form (effective once confirmed).

The partners' names the pages show are read here too (the registry itself is partners/registry.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.models import ConsentAction, Partner, PartnerShare, Subscriber, SubscriberStatus
from newsletter.subscribers.consent import RequestInfo, Wording, record_event
from newsletter.subscribers.wording import stored_wording

CACHE_SECONDS = 30

_cache: tuple[float, object, dict[str, str]] | None = None


def partner_names(session: Session) -> dict[str, str]:
    """Partner id -> display name, in id order; cached briefly (every signup page needs it)."""
    global _cache
    bind = session.get_bind()
    now = time.monotonic()
    if _cache is None or _cache[1] is not bind or now - _cache[0] > CACHE_SECONDS:
        names = {
            pid: name for pid, name in session.execute(select(Partner.id, Partner.name).order_by(Partner.id))
        }
        _cache = (now, bind, names)
    return _cache[2]


def clear_cache() -> None:
    """Called by the registry whenever a partner is added or removed."""
    global _cache
    _cache = None


def record_grant(share: PartnerShare, wording: Wording, source: str) -> None:
    """Keep the current grant's evidence on the share itself (exports read it from there)."""
    share.granted = True
    share.granted_at = share.updated_at = clock.now()
    share.wording_version, share.wording_hash, share.source = wording.version, wording.sha256, source[:100]
    share.requested_at = None


def record_withdrawal(share: PartnerShare) -> None:
    share.granted = False
    share.updated_at = clock.now()
    share.granted_at = share.wording_version = share.wording_hash = share.source = share.requested_at = None


_WILL_CONFIRM = (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED)


def request_shares(
    session: Session, subscriber_id: int, partner_ids: Iterable[str], wordings: Mapping[str, Wording]
) -> None:
    """The signup form's ticks: kept as requests until the person confirms their address.

    ``wordings``: partner id -> the wording the form showed next to its checkbox (its version
    names the language). The form is unauthenticated, so a tick on it proves nothing until the
    confirmation link is used; an already active subscriber changes sharing in the preference centre.
    """
    wanted = [pid for pid in partner_ids if pid in wordings]
    subscriber = session.get(Subscriber, subscriber_id)
    # Pending or unsubscribed people confirm again after this signup; active ones get a notice only.
    if not wanted or subscriber is None or subscriber.status not in _WILL_CONFIRM:
        return
    shares = {s.partner_id: s for s in subscriber.partner_shares}
    for pid in wanted:
        share = shares.get(pid)
        if share is None:
            share = PartnerShare(partner_id=pid, granted=False)
            subscriber.partner_shares.append(share)
        if share.granted:
            continue
        wording = wordings[pid]
        share.requested_at = clock.now()
        share.wording_version, share.wording_hash, share.source = (
            wording.version,
            wording.sha256,
            "web:subscribe",
        )
    session.flush()


def grant_requested_shares(
    session: Session, subscriber: Subscriber, request: RequestInfo, settings: Settings | None = None
) -> list[str]:
    """On confirmation: the partners ticked at signup become grants, each with its ledger event.

    The wording is the one the form showed (the version and language kept on the request), read
    again from the store's files (``settings``; the shipped ones alone without).
    """
    shares = session.scalars(
        select(PartnerShare).where(
            PartnerShare.subscriber_id == subscriber.id,
            PartnerShare.requested_at.is_not(None),
            PartnerShare.granted.is_(False),
        )
    ).all()
    names = partner_names(session)
    granted = []
    for share in shares:
        name = names.get(share.partner_id)
        if name is None:  # the partner was removed in between
            continue
        wording = stored_wording(settings, share.wording_version, name)
        if wording is None or share.wording_hash != wording.sha256:
            continue  # the name or the file changed since they saw it: what they agreed to no longer holds
        requested_at = share.requested_at
        record_grant(share, wording, share.source or "web:subscribe")
        record_event(
            session,
            subscriber.id,
            ConsentAction.PARTNER_SHARE_GRANTED,
            RequestInfo(request.ip, request.user_agent, "web:subscribe"),
            wording=wording,
            details={
                "partner": share.partner_id,
                "partner_name": name,
                "requested_at": requested_at.isoformat() + "Z",
                "confirmed_via": request.source,
            },
        )
        granted.append(share.partner_id)
    return granted
