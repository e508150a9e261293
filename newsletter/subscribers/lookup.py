"""Reading about people for the dashboard (admin/people.py): search by address, one person's profile.

Read-only: a change to a person goes through their own preference centre or the command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.core.keyset import Page, fetch_page
from newsletter.models import (
    Campaign,
    ConsentEvent,
    Customer,
    Delivery,
    PartnerShare,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    Topic,
)
from newsletter.models.subscribers import address_key
from newsletter.subscribers import suppression
from newsletter.subscribers.data_rights import store_data
from newsletter.subscribers.preferences import is_paused
from newsletter.subscribers.sharing import partner_names

PAGE_SIZE = 50
#: the longest address there is (RFC 5321's path limit)
MAX_QUERY = 320
RECENT_DELIVERIES = 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadQuery(ValueError):
    """A search the list cannot answer; the message is one line for the page."""


def clean_query(text: str | None) -> str:
    """The search as typed, trimmed; BadQuery for what no address can start with."""
    text = (text or "").strip()
    if len(text) > MAX_QUERY:
        raise BadQuery(f"An address has at most {MAX_QUERY} characters; this search has {len(text)}.")
    if _CONTROL.search(text):
        raise BadQuery("An address has no control characters (tabs, line breaks, ...).")
    return text


def _after_prefix(prefix: str) -> str:
    """The first string in code-point (UTF-8 byte) order that no longer starts with ``prefix``."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last == 0xD800:  # surrogates are not characters: skip them
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return ""


@dataclass(frozen=True)
class Found:
    id: int
    email: str
    status: SubscriberStatus
    created_at: datetime
    #: (topic slug, subscription status), in the topics' form order
    topics: list[tuple[str, SubscriptionStatus]]


def search(
    session: Session,
    query: str,
    *,
    after: int | None = None,
    before: int | None = None,
    size: int = PAGE_SIZE,
) -> Page:
    """Subscribers whose address starts with ``query`` in any letter case, in address order; without a
    query, everyone, newest first. A page of :class:`Found`, read by the index (no scan of the list)."""
    columns = select(Subscriber.id, Subscriber.email, Subscriber.status, Subscriber.created_at)
    if query:
        # lowered by the database itself, so both sides of the comparison are lowered alike
        low = session.scalar(select(func.lower(query)))
        key = address_key(Subscriber.email)
        columns = columns.where(key >= low)
        if end := _after_prefix(low):
            columns = columns.where(key < end)
        page = fetch_page(
            session, columns, (key, Subscriber.id), Subscriber.id, after=after, before=before, size=size
        )
    else:
        page = fetch_page(
            session,
            columns,
            (Subscriber.id,),
            Subscriber.id,
            after=after,
            before=before,
            size=size,
            descending=True,
        )
    topics = topics_of(session, [row.id for row in page.rows])
    found = [Found(r.id, r.email, r.status, r.created_at, topics.get(r.id, [])) for r in page.rows]
    return Page(found, page.after, page.before)


def topics_of(session: Session, ids: list[int]) -> dict[int, list[tuple[str, SubscriptionStatus]]]:
    """Each subscriber's topics and their status, for one page of subscribers (one query)."""
    topics: dict[int, list[tuple[str, SubscriptionStatus]]] = {}
    if ids:
        rows = session.execute(
            select(Subscription.subscriber_id, Topic.slug, Subscription.status)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.subscriber_id.in_(ids))
            .order_by(Topic.position, Topic.slug)
        )
        for subscriber_id, slug, status in rows:
            topics.setdefault(subscriber_id, []).append((slug, status))
    return topics


@dataclass(frozen=True)
class Share:
    partner_id: str
    #: None: the partner was removed since
    partner_name: str | None
    row: PartnerShare


@dataclass(frozen=True)
class Profile:
    subscriber: Subscriber
    paused: bool
    subscriptions: list[Subscription]
    shares: list[Share]
    customer: Customer | None
    suppression: Suppression | None
    #: the consent ledger, oldest first
    ledger: list[ConsentEvent]
    #: (delivery, campaign slug, campaign name), newest first
    deliveries: list[tuple[Delivery, str, str]]
    #: data_rights.store_data: the store's events about the address, its mail, the order invitation
    store: dict[str, Any]


def profile(session: Session, subscriber_id: int) -> Profile | None:
    """Everything the dashboard shows about one person (None: no such subscriber)."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return None
    names = partner_names(session)
    ledger = session.scalars(
        select(ConsentEvent)
        .where(ConsentEvent.subscriber_id == subscriber.id)
        .order_by(ConsentEvent.occurred_at, ConsentEvent.id)
    )
    deliveries = session.execute(
        select(Delivery, Campaign.slug, Campaign.name)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(Delivery.id.desc())
        .limit(RECENT_DELIVERIES)
    )
    erased = subscriber.status == SubscriberStatus.ERASED
    return Profile(
        subscriber=subscriber,
        paused=is_paused(subscriber),
        subscriptions=sorted(subscriber.subscriptions, key=lambda s: (s.topic.position, s.topic.slug)),
        shares=[Share(s.partner_id, names.get(s.partner_id), s) for s in subscriber.partner_shares],
        customer=session.scalar(select(Customer).where(Customer.email_hash == subscriber.email_hash)),
        suppression=suppression.find(session, subscriber.email_hash),
        ledger=list(ledger),
        deliveries=[tuple(row) for row in deliveries],
        # an erased row's address is a placeholder: nothing of the store's is kept for it
        store={} if erased else store_data(session, subscriber.email),
    )
