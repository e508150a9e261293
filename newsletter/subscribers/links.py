"""Personal links in emails: confirm, unsubscribe, preferences, early access. One token per purpose.

Every token names the subscriber by id and the first 16 hex digits of their address hash,
so a link stops working when the person is erased (their row's hash is replaced). A
confirmation link also names the signup request it answers (``r``: the request's ledger event).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from newsletter.core.config import Settings
from newsletter.models import Subscriber
from newsletter.subscribers.tokens import Purpose, TokenError, make_token, read_token

#: Unsubscribe links never expire (CAN-SPAM wants 30 days after sending, CASL 60).
UNSUBSCRIBE_MAX_AGE = None
#: Preference links outlive any reasonable gap between two emails.
PREFERENCES_MAX_AGE = 400 * 86400


def _payload(subscriber: Subscriber, **extra: Any) -> dict[str, Any]:
    return {"s": subscriber.id, "h": subscriber.email_hash[:16], **extra}


def _base(settings: Settings) -> str:
    return settings.base_url.rstrip("/")


def confirm_url(settings: Settings, subscriber: Subscriber, request_id: int | None) -> str:
    """The confirmation link of one signup request (its ledger event's id): it confirms that request only."""
    token = make_token(settings, Purpose.CONFIRM, _payload(subscriber, r=request_id))
    return f"{_base(settings)}/confirm/{token}"


def unsubscribe_url(
    settings: Settings, subscriber: Subscriber, topic: str | None = None, campaign_id: int | None = None
) -> str:
    """The unsubscribe link; with ``topic`` its page offers "only this topic" first.

    ``campaign_id`` (``c``): the campaign whose email carries the link, so that an unsubscribe
    through it is counted on that campaign's delivery (``attribution.py``).
    """
    extra: dict[str, Any] = {"t": topic} if topic else {}
    if campaign_id is not None:
        extra["c"] = campaign_id
    token = make_token(settings, Purpose.UNSUBSCRIBE, _payload(subscriber, **extra))
    return f"{_base(settings)}/unsubscribe/{token}"


def preferences_url(settings: Settings, subscriber: Subscriber) -> str:
    return f"{_base(settings)}/preferences/{make_token(settings, Purpose.PREFERENCES, _payload(subscriber))}"


def early_access_url(settings: Settings, subscriber: Subscriber, campaign_id: int) -> str:
    """The personal early-access link of one campaign; the page checks the sale's window."""
    token = make_token(settings, Purpose.EARLY_ACCESS, _payload(subscriber, c=campaign_id))
    return f"{_base(settings)}/early-access/{token}"


def order_invite_url(settings: Settings, invitation_id: int, email_hash: str) -> str:
    """The join link of an order invitation: it names the invitation, not a subscriber (there is none yet)."""
    token = make_token(settings, Purpose.ORDER_INVITE, {"i": invitation_id, "h": email_hash[:16]})
    return f"{_base(settings)}/join/{token}"


def max_age(settings: Settings, purpose: Purpose) -> int | None:
    return {
        Purpose.CONFIRM: settings.confirm_max_age_days * 86400,
        Purpose.UNSUBSCRIBE: UNSUBSCRIBE_MAX_AGE,
        Purpose.PREFERENCES: PREFERENCES_MAX_AGE,
        # The sale's own window (wave start to public_at) decides; the token itself does not expire.
        Purpose.EARLY_ACCESS: None,
        Purpose.ORDER_INVITE: settings.confirm_max_age_days * 86400,
    }[purpose]


def read_link(session: Session, settings: Settings, purpose: Purpose, token: str) -> tuple[Subscriber, dict]:
    """The subscriber a link is for and its payload, or TokenError.

    An expired link's error carries the subscriber (``payload``) and the payload (``link_payload``).
    """
    try:
        payload = read_token(settings, purpose, token, max_age(settings, purpose))
    except TokenError as exc:
        if exc.expired:
            exc.link_payload = exc.payload if isinstance(exc.payload, dict) else {}
            exc.payload = _subscriber_for(session, exc.payload)
        raise
    subscriber = _subscriber_for(session, payload)
    if subscriber is None:
        raise TokenError("the person this link was made for is no longer on file", gone=True)
    return subscriber, payload


def _subscriber_for(session: Session, payload: Any) -> Subscriber | None:
    if not isinstance(payload, dict) or not isinstance(payload.get("s"), int):
        return None
    subscriber = session.get(Subscriber, payload["s"])
    if subscriber is None or subscriber.email_hash[:16] != payload.get("h"):
        return None
    return subscriber
