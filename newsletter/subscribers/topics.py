"""The topics people choose from: add, rename, retire, list (``newsletter topics``, docs/topics.md).

A topic's slug never changes once added: campaign files (``topic = "..."``), unsubscribe links and
the consent ledger name topics by slug. Renaming changes the label people see on the forms, in the
welcome email and in campaigns' List-Id. Retiring takes a topic off every form and stops every
campaign mail to it (not yet started waves select nobody, rows already queued are skipped with
``topic retired``), while its subscriptions and the ledger events that name it stay as they were:
the person's history. No ledger event is written for a retirement: the ledger records what people
decided, and nobody's consent changed; ``topics.retired_at`` records what the store did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.core.db import on_commit
from newsletter.core.languages import shipped_languages
from newsletter.models import Subscriber, SubscriberStatus, Subscription, SubscriptionStatus, Topic
from newsletter.subscribers.signup import forget_topics

#: lowercase letters and digits, words joined by single hyphens (as campaign slugs)
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
SLUG_LENGTH = 50
LABEL_LENGTH = 100
DESCRIPTION_LENGTH = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TopicError(ValueError):
    """A refused change, with a one-line reason; nothing was written."""


@dataclass(frozen=True)
class TopicRow:
    """One line of ``newsletter topics list``."""

    slug: str
    label: str
    description: str
    position: int
    retired_at: datetime | None
    #: confirmed people with an active subscription (whom a campaign would mail, were it live)
    subscribers: int
    #: the languages it has its own label in (``rename --language``)
    languages: tuple[str, ...] = ()


def check_slug(slug: str) -> str:
    """The slug if it is usable, else :class:`TopicError` saying why."""
    if not slug or len(slug) > SLUG_LENGTH or not SLUG.fullmatch(slug):
        raise TopicError(
            f"bad slug {slug!r}: use lowercase letters, digits and single hyphens between them "
            f"(at most {SLUG_LENGTH} characters), e.g. 'pet-care'"
        )
    return slug


def _text(value: str, what: str, length: int, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise TopicError(f"the {what} is empty")
    if _CONTROL.search(value):
        raise TopicError(f"the {what} holds a control character (a tab or a line break?)")
    if len(value) > length:
        raise TopicError(f"the {what} is {len(value)} characters long; at most {length}")
    return value


def find_topic(session: Session, slug: str) -> Topic:
    """The topic with this slug, retired or not; :class:`TopicError` naming the known ones if none."""
    topic = session.scalar(select(Topic).where(Topic.slug == slug))
    if topic is None:
        known = ", ".join(session.scalars(select(Topic.slug).order_by(Topic.position, Topic.id))) or "none"
        raise TopicError(f"no topic {slug!r} (known: {known})")
    return topic


def add_topic(session: Session, slug: str, label: str, description: str = "") -> Topic:
    """Offer a new topic, last on the forms; a slug is never reused, not even a retired one's."""
    slug = check_slug(slug)
    label = _text(label, "label", LABEL_LENGTH, required=True)
    description = _text(description, "description", DESCRIPTION_LENGTH, required=False)
    existing = session.scalar(select(Topic).where(Topic.slug == slug))
    if existing is not None:
        raise TopicError(_exists(existing))
    position = (session.scalar(select(func.max(Topic.position))) or 0) + 1
    topic = Topic(slug=slug, name=label, description=description, position=position)
    try:
        with session.begin_nested():  # another `topics add` of the same slug won the race
            session.add(topic)
    except IntegrityError:
        raise TopicError(f"topic {slug!r} exists") from None
    on_commit(session, forget_topics)
    return topic


def _exists(topic: Topic) -> str:
    if topic.retired_at is not None:
        return (
            f"topic {topic.slug!r} exists, retired on {topic.retired_at:%Y-%m-%d}; "
            "a slug is never reused (old emails and the consent ledger name it): choose another"
        )
    return f"topic {topic.slug!r} exists (label {topic.name!r}); `newsletter topics rename` changes its label"


def rename_topic(
    session: Session, slug: str, label: str, description: str | None = None, language: str | None = None
) -> str:
    """Change the label people see (and the description, if given); the slug stays. The old label.
    With ``language``, the label (and description) shown to people reading that language: a page or
    email in a language the topic has no label in shows ``name``."""
    topic = find_topic(session, slug)
    label = _text(label, "label", LABEL_LENGTH, required=True)
    if description is not None:
        description = _text(description, "description", DESCRIPTION_LENGTH, required=False)
    if language is None:
        old = topic.name
        topic.name = label
        if description is not None:
            topic.description = description
    else:
        if language not in shipped_languages():
            raise TopicError(
                f"no language {language!r} is shipped (shipped: {', '.join(shipped_languages())})"
            )
        translations = dict(topic.translations or {})
        entry = translations.get(language) or {"description": topic.description}
        old = entry.get("name") or topic.name
        translations[language] = {
            "name": label,
            "description": entry["description"] if description is None else description,
        }
        topic.translations = translations  # a new dict: the JSON column sees the change
    on_commit(session, forget_topics)
    return old


def retire_topic(session: Session, slug: str, now: datetime | None = None) -> tuple[Topic, bool]:
    """Retire the topic (False: it already was; its date stays). Subscriptions are left as they are."""
    topic = find_topic(session, slug)
    if topic.retired_at is not None:
        return topic, False
    topic.retired_at = now or clock.now()
    on_commit(session, forget_topics)
    return topic, True


def topic_rows(session: Session) -> list[TopicRow]:
    """Every topic, retired ones too, in form order, with its count of subscribed people (one query)."""
    subscribed = (
        select(func.count())
        .select_from(Subscription)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(
            Subscription.topic_id == Topic.id,
            Subscription.status == SubscriptionStatus.ACTIVE,
            Subscriber.status == SubscriberStatus.ACTIVE,
        )
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Topic.slug,
            Topic.name,
            Topic.description,
            Topic.position,
            Topic.retired_at,
            subscribed,
            Topic.translations,
        ).order_by(Topic.position, Topic.id)
    )
    return [TopicRow(*row[:6], languages=tuple(sorted(row[6] or {}))) for row in rows]


def retired_slugs(session: Session) -> dict[str, datetime]:
    """Retired topics' slugs and when they were retired."""
    rows = session.execute(select(Topic.slug, Topic.retired_at).where(Topic.retired_at.is_not(None)))
    return {slug: at for slug, at in rows}
