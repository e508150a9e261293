"""Early-access sales: the personal link's window, the short-lived code the store checks, redemptions.

A subscriber's link (``links.early_access_url``) opens the sale from their wave's start until
the campaign's ``public_at``. Then they are sent on to the sale with a code: HMAC-SHA256 over
``{"v": 1, "campaign": slug, "ref": opaque subscriber reference, "exp": unix seconds}``,
written ``base64url(json) + "." + base64url(mac)`` with ``EARLY_ACCESS_SECRET``. The store
checks it with ``GET /api/early-access/verify`` or by computing the HMAC itself
(docs/early-access.md).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from newsletter.core.config import Settings
from newsletter.models import Campaign, CampaignStatus, Delivery, Subscriber, Wave

CODE_PARAMETER = "nl_code"
CODE_VERSION = 1


class Access(enum.StrEnum):
    """What an early-access link leads to at a given moment."""

    OPEN = "open"  #: in the subscriber's window: redirect to the sale with a code
    NOT_YET = "not_yet"  #: their wave has not started
    PUBLIC = "public"  #: public_at has passed: the sale is open to everyone
    ENDED = "ended"  #: ends_at has passed, or the campaign was cancelled
    NOT_INVITED = "not_invited"  #: no delivery for this person (or not an early-access campaign)


@dataclass(frozen=True)
class Outcome:
    access: Access
    campaign: Campaign | None = None
    #: when the subscriber's wave starts (NOT_YET)
    starts_at: datetime | None = None
    #: where to go: the sale with the code (OPEN), the public sale (PUBLIC)
    url: str | None = None
    #: the link was used for the first time just now
    first_use: bool = False


# --- the code -----------------------------------------------------------------------------


def code_secret(settings: Settings) -> bytes:
    """EARLY_ACCESS_SECRET, or a key derived from SECRET_KEY (then only the API can verify)."""
    if settings.early_access_secret:
        return settings.early_access_secret.encode("utf-8")
    return hmac.new(settings.secret_key.encode("utf-8"), b"newsletter.early-access-code", "sha256").digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def subscriber_ref(settings: Settings, campaign_slug: str, subscriber_id: int) -> str:
    """A stable, opaque reference to the subscriber, different for every campaign."""
    mac = hmac.new(code_secret(settings), f"ref:{campaign_slug}:{subscriber_id}".encode(), hashlib.sha256)
    return _b64(mac.digest()[:12])


def make_code(settings: Settings, campaign_slug: str, subscriber_id: int, now: datetime) -> str:
    """A signed code valid EARLY_ACCESS_CODE_MINUTES from ``now`` (naive UTC)."""
    expires = now + timedelta(minutes=settings.early_access_code_minutes)
    claims = {
        "v": CODE_VERSION,
        "campaign": campaign_slug,
        "ref": subscriber_ref(settings, campaign_slug, subscriber_id),
        "exp": int(expires.replace(tzinfo=UTC).timestamp()),
    }
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    signature = hmac.new(code_secret(settings), body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


@dataclass(frozen=True)
class CodeCheck:
    valid: bool
    reason: str | None = None
    campaign: str | None = None
    ref: str | None = None
    expires_at: datetime | None = None


def verify_code(settings: Settings, code: str, now: datetime) -> CodeCheck:
    """Check signature and expiry of a code (exactly what docs/early-access.md shows the store)."""
    try:
        body, signature = code.split(".")
        expected = hmac.new(code_secret(settings), body.encode("ascii"), hashlib.sha256).digest()
        genuine = hmac.compare_digest(_unb64(signature), expected)
        claims = json.loads(_unb64(body)) if genuine else None
    except (ValueError, UnicodeError):
        return CodeCheck(False, "malformed")
    if not genuine:
        return CodeCheck(False, "bad signature")
    if (
        not isinstance(claims, dict)
        or claims.get("v") != CODE_VERSION
        or not isinstance(claims.get("exp"), int)
    ):
        return CodeCheck(False, "malformed")
    expires_at = datetime.fromtimestamp(claims["exp"], UTC).replace(tzinfo=None)
    if expires_at <= now:
        return CodeCheck(False, "expired", claims.get("campaign"), claims.get("ref"), expires_at)
    return CodeCheck(True, None, claims.get("campaign"), claims.get("ref"), expires_at)


def with_code(url: str, code: str) -> str:
    """The sale's URL with ``nl_code`` added (its own query and fragment kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != CODE_PARAMETER]
    query.append((CODE_PARAMETER, code))
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- the link -------------------------------------------------------------------------------


def open_link(
    session: Session, settings: Settings, subscriber: Subscriber, payload: dict[str, Any], now: datetime
) -> Outcome:
    """Decide what the link leads to now; in the window, record the first use and mint a code."""
    campaign_id = payload.get("c")
    campaign = session.get(Campaign, campaign_id) if isinstance(campaign_id, int) else None
    if campaign is None or not campaign.sale_url:
        return Outcome(Access.NOT_INVITED)
    if campaign.status == CampaignStatus.CANCELLED or (campaign.ends_at and now >= campaign.ends_at):
        return Outcome(Access.ENDED, campaign)
    if campaign.public_at and now >= campaign.public_at:
        return Outcome(Access.PUBLIC, campaign, url=campaign.sale_url)
    row = session.execute(
        select(Delivery, Wave)
        .join(Wave, Wave.id == Delivery.wave_id)
        .where(Delivery.campaign_id == campaign.id, Delivery.subscriber_id == subscriber.id)
    ).first()
    if row is None:
        return Outcome(Access.NOT_INVITED, campaign)
    delivery, wave = row
    if wave.started_at is None or now < wave.started_at:
        return Outcome(Access.NOT_YET, campaign, starts_at=wave.started_at or wave.send_at)
    # Conditional UPDATE: two clicks at once still count one redemption.
    first_use = (
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id, Delivery.redeemed_at.is_(None))
            .values(redeemed_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )
    code = make_code(settings, campaign.slug, subscriber.id, now)
    return Outcome(Access.OPEN, campaign, url=with_code(campaign.sale_url, code), first_use=first_use)


def redemptions_per_wave(session: Session, campaign_id: int) -> dict[str, int]:
    """Wave name -> how many of its recipients used their early-access link (each counted once)."""
    rows = session.execute(
        select(Wave.name, func.count(Delivery.redeemed_at))
        .select_from(Wave)
        .outerjoin(Delivery, Delivery.wave_id == Wave.id)
        .where(Wave.campaign_id == campaign_id)
        .group_by(Wave.id, Wave.name, Wave.position)
        .order_by(Wave.position)
    ).all()
    return {name: count for name, count in rows}
