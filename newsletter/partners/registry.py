"""Partner stores we trade with: id, the name people see, the shared secret of the pair."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.config import Settings, is_loopback
from newsletter.models import Partner
from newsletter.subscribers.sharing import clear_cache

PARTNER_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,49}")
#: printable ASCII without spaces; long enough to resist guessing
SECRET = re.compile(r"[!-~]{32,128}")
#: scheduled exchanges: how often
SYNC_PERIODS = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
SYNC_CHOICES = (*SYNC_PERIODS, "off")


class PartnerError(Exception):
    """A partner operation cannot go ahead; the message is one line for the operator."""


def check_name(name: str) -> str:
    """The display name goes into consent wording and emails: one short line of text."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise PartnerError("the display name must be 1 to 100 characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise PartnerError("the display name must not contain line breaks or control characters")
    return name


def check_url(url: str) -> str:
    """The partner engine's base URL: https, or http on this machine (tests, a tunnel); no path tricks."""
    url = (url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise PartnerError(f"{url!r}: the partner's URL must be https://host[:port][/path]")
    if parts.scheme == "http" and not is_loopback(url):
        raise PartnerError(f"{url!r}: plain http only on loopback; a partner on the network needs https")
    if parts.query or parts.fragment or parts.username or parts.password or len(url) > 300:
        raise PartnerError(f"{url!r}: no query, fragment or credentials, at most 300 characters")
    return url


def set_sync(partner: Partner, sync: str, now: datetime) -> None:
    """Schedule (or stop) the partner's exchanges; a newly scheduled one is due at once."""
    if sync not in SYNC_CHOICES:
        raise PartnerError(f"sync must be one of {', '.join(SYNC_CHOICES)}")
    if sync != "off" and not partner.url:
        raise PartnerError("a scheduled sync needs the partner's URL (--url)")
    if sync == "off":
        partner.next_sync_at = None
    elif partner.sync != sync or partner.next_sync_at is None:
        partner.next_sync_at = now
    partner.sync = sync


def update_partner(
    session: Session,
    partner_id: str,
    *,
    name: str | None = None,
    url: str | None = None,
    sync: str | None = None,
) -> Partner:
    """Change a partner's name, URL (``""`` removes it) or schedule."""
    partner = get_partner(session, partner_id)
    if name is not None:
        partner.name = check_name(name)
    if url is not None:
        partner.url = check_url(url) if url else None
        if not partner.url and partner.sync != "off":
            raise PartnerError("the partner has a scheduled sync: turn it off (--sync off) first")
    if sync is not None:
        set_sync(partner, sync, clock.now())
    session.flush()
    clear_cache()
    return partner


def add_partner(
    session: Session,
    partner_id: str,
    name: str,
    secret: str | None = None,
    *,
    url: str | None = None,
    sync: str = "off",
) -> tuple[Partner, str]:
    """Register a partner; returns it and its secret (generated unless given)."""
    if not PARTNER_ID.fullmatch(partner_id or ""):
        raise PartnerError(
            f"{partner_id!r}: ids are 1 to 50 of a-z, 0-9 and -, starting with a letter or digit"
        )
    name = check_name(name)
    if secret is None:
        secret = secrets.token_urlsafe(32)
    elif not SECRET.fullmatch(secret):
        raise PartnerError("the secret must be 32 to 128 printable ASCII characters without spaces")
    if session.get(Partner, partner_id) is not None:
        raise PartnerError(f"partner {partner_id!r} exists already")
    partner = Partner(
        id=partner_id, name=name, secret=secret, created_at=clock.now(), url=check_url(url) if url else None
    )
    partner.sync = "off"
    set_sync(partner, sync, partner.created_at)
    session.add(partner)
    session.flush()
    clear_cache()
    return partner, secret


def list_partners(session: Session) -> list[Partner]:
    return list(session.scalars(select(Partner).order_by(Partner.id)))


def get_partner(session: Session, partner_id: str) -> Partner:
    partner = session.get(Partner, partner_id)
    if partner is None:
        raise PartnerError(f"no partner with id {partner_id!r} (see 'newsletter partners list')")
    return partner


def remove_partner(session: Session, partner_id: str) -> bool:
    """Forget a partner and its opt-out list; the ledger of past imports stays."""
    removed = session.execute(delete(Partner).where(Partner.id == partner_id)).rowcount > 0
    clear_cache()
    return removed


def require_store_id(settings: Settings) -> str:
    store_id = settings.store_id
    if not store_id:
        raise PartnerError("NEWSLETTER_STORE_ID is not set: partners need to know which store we are")
    return store_id
