"""The preference centre: topics, frequency, pause, time zone, name, partner sharing.

Every change appends one consent event with what was before and what is after; the
first name is recorded as changed, never its value, so the ledger holds no name to erase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.models import (
    ConsentAction,
    Frequency,
    PartnerShare,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    SuppressionReason,
)
from newsletter.subscribers import suppression
from newsletter.subscribers.consent import RequestInfo, Wording, record_event
from newsletter.subscribers.names import clean_first_name
from newsletter.subscribers.sharing import record_grant, record_withdrawal
from newsletter.subscribers.signup import topics_by_slug
from newsletter.subscribers.wording import partner_wording


@dataclass
class Preferences:
    """What the person can change; the form fills it and the service applies it."""

    topics: set[str]
    frequency: Frequency
    pause_weeks: int | None  # None: leave the pause as it is; 0: resume now
    time_zone: str
    first_name: str | None
    partners: set[str] = field(default_factory=set)
    #: the person's language (one of the shipped ones); None leaves it as it is
    language: str | None = None


def current(subscriber: Subscriber) -> Preferences:
    return Preferences(
        topics={s.topic.slug for s in subscriber.subscriptions if s.status == SubscriptionStatus.ACTIVE},
        frequency=subscriber.frequency,
        pause_weeks=None,
        time_zone=subscriber.time_zone,
        first_name=subscriber.first_name,
        partners={p.partner_id for p in subscriber.partner_shares if p.granted},
    )


def _snapshot(subscriber: Subscriber) -> dict[str, Any]:
    prefs = current(subscriber)
    return {
        "topics": sorted(prefs.topics),
        "frequency": prefs.frequency.value,
        "paused_until": subscriber.paused_until.isoformat() + "Z" if subscriber.paused_until else None,
        "time_zone": prefs.time_zone,
        "status": subscriber.status.value,
        "language": subscriber.language,
    }


def is_paused(subscriber: Subscriber, now: datetime | None = None) -> bool:
    return subscriber.paused_until is not None and subscriber.paused_until > (now or clock.now())


def update(
    session: Session,
    subscriber: Subscriber,
    wanted: Preferences,
    request: RequestInfo,
    partner_names: dict[str, str],
    wording_of: Callable[[str], Wording] | None = None,
) -> bool:
    """Apply the form: one ledger event for the profile, one per partner decision.

    ``wording_of(partner_name)``: the sharing wording the page showed (its language and the
    store's files); without it the shipped English one. Returns False if nothing changed; raises
    InvalidName (changing nothing) for an unusable name.
    """
    first_name = clean_first_name(wanted.first_name)  # raises InvalidName, before anything changes
    before = _snapshot(subscriber)
    name_changed = first_name != (subscriber.first_name or None)
    _set_topics(session, subscriber, wanted.topics)
    subscriber.frequency = wanted.frequency
    subscriber.time_zone = wanted.time_zone
    subscriber.first_name = first_name
    if wanted.language is not None:
        subscriber.language = wanted.language
    if wanted.pause_weeks == 0:
        subscriber.paused_until = None
    elif wanted.pause_weeks:
        subscriber.paused_until = clock.now() + timedelta(weeks=wanted.pause_weeks)
    if wanted.topics and subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        # Choosing a topic again from an authenticated link is a fresh opt-in to it.
        subscriber.status = SubscriberStatus.ACTIVE
        suppression.lift_after_opt_in(session, subscriber.email_hash)
    elif not wanted.topics and subscriber.status == SubscriberStatus.ACTIVE:
        _leave_everything(session, subscriber)
    session.flush()
    after = _snapshot(subscriber)

    changed = before != after or name_changed
    if changed:
        details: dict[str, Any] = {"before": before, "after": after}
        if name_changed:
            details["first_name"] = "changed"
        added = sorted(set(after["topics"]) - set(before["topics"]))
        record_event(
            session, subscriber.id, ConsentAction.PREFERENCES_CHANGED, request, topics=added, details=details
        )
    wording_of = wording_of or (lambda name: partner_wording(None, name))
    changed |= _set_partners(session, subscriber, wanted.partners, request, partner_names, wording_of)
    session.flush()
    return changed


def _set_topics(session: Session, subscriber: Subscriber, wanted: set[str]) -> None:
    topics = topics_by_slug(session)
    existing = {s.topic_id: s for s in subscriber.subscriptions}
    for slug, topic in topics.items():
        subscription = existing.get(topic.id)
        if slug in wanted:
            if subscription is None:
                subscriber.subscriptions.append(
                    Subscription(topic_id=topic.id, status=SubscriptionStatus.ACTIVE)
                )
            else:
                subscription.status = SubscriptionStatus.ACTIVE
        elif subscription is not None and subscription.status != SubscriptionStatus.UNSUBSCRIBED:
            subscription.status = SubscriptionStatus.UNSUBSCRIBED


def _set_partners(
    session: Session,
    subscriber: Subscriber,
    wanted: set[str],
    request: RequestInfo,
    partner_names: dict[str, str],
    wording_of: Callable[[str], Wording],
) -> bool:
    shares = {p.partner_id: p for p in subscriber.partner_shares}
    changed = False
    for partner_id, name in partner_names.items():
        share = shares.get(partner_id)
        granted_now = share is not None and share.granted
        if (partner_id in wanted) == granted_now:
            continue
        if share is None:
            share = PartnerShare(partner_id=partner_id, granted=False)
            subscriber.partner_shares.append(share)
        wording = wording_of(name)
        if partner_id in wanted:
            record_grant(share, wording, request.source)
        else:
            record_withdrawal(share)
        action = (
            ConsentAction.PARTNER_SHARE_GRANTED if share.granted else ConsentAction.PARTNER_SHARE_WITHDRAWN
        )
        record_event(
            session,
            subscriber.id,
            action,
            request,
            wording=wording,
            details={"partner": partner_id, "partner_name": name},
        )
        changed = True
    return changed


def unsubscribe(
    session: Session, subscriber: Subscriber, request: RequestInfo, topic: str | None = None
) -> bool:
    """Leave one topic, or everything (``topic=None``); idempotent. False if nothing changed."""
    if subscriber.status == SubscriberStatus.ERASED:
        return False
    before = _snapshot(subscriber)
    topics = topics_by_slug(session)
    if topic is not None and topic in topics:
        for subscription in subscriber.subscriptions:
            if (
                subscription.topic_id == topics[topic].id
                and subscription.status != SubscriptionStatus.UNSUBSCRIBED
            ):
                subscription.status = SubscriptionStatus.UNSUBSCRIBED
        if not any(s.status == SubscriptionStatus.ACTIVE for s in subscriber.subscriptions):
            _leave_everything(session, subscriber)
    else:
        _leave_everything(session, subscriber)
    session.flush()
    after = _snapshot(subscriber)
    if before == after:
        return False
    left = sorted(set(before["topics"]) - set(after["topics"]))
    record_event(
        session,
        subscriber.id,
        ConsentAction.UNSUBSCRIBED,
        request,
        topics=left,
        details={
            "scope": "topic" if topic and after["status"] != "unsubscribed" else "everything",
            "before": before,
            "after": after,
        },
    )
    return True


def _leave_everything(session: Session, subscriber: Subscriber) -> None:
    for subscription in subscriber.subscriptions:
        subscription.status = SubscriptionStatus.UNSUBSCRIBED
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    # The suppression list is what every send checks; it also outlives an erasure.
    suppression.suppress(
        session, subscriber.email_hash, SuppressionReason.UNSUBSCRIBED, request_source(subscriber)
    )


def request_source(subscriber: Subscriber) -> str:
    return f"subscriber:{subscriber.id}"
