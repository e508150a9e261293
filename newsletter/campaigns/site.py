"""What rendering needs to know about the store: names, addresses, topics (from config and DB)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.core.config import Settings
from newsletter.mail.branding import Brand, brand_of, from_header
from newsletter.mail.message import domain_of
from newsletter.models import Topic


@dataclass(frozen=True)
class SiteContext:
    store_name: str
    postal_address: str
    base_url: str  #: no trailing slash
    sender: str  #: the configured From
    list_id: str  #: domain part of List-Id
    topics: dict[str, str]  #: slug -> name
    brand: Brand = field(default_factory=lambda: brand_of(Settings()))  #: logo, colours (base.mjml)
    overrides_dir: str = ""  #: OVERRIDES_DIR: its email/base.mjml wins over the shipped one
    #: topics retired with ``newsletter topics retire`` (still in ``topics``: frozen emails name them)
    retired_topics: frozenset[str] = frozenset()
    #: topic labels in other languages, slug -> language -> label (``topics rename --language``)
    topic_translations: dict[str, dict[str, str]] = field(default_factory=dict)

    def topic_name(self, slug: str, language: str) -> str:
        """The topic's label for readers of ``language`` (its default label without one there)."""
        return self.topic_translations.get(slug, {}).get(language) or self.topics.get(slug, slug)


def topics_from_db(session: Session) -> dict[str, str]:
    """Every topic's slug and display name, in form order."""
    rows = session.execute(select(Topic.slug, Topic.name).order_by(Topic.position, Topic.id))
    return {slug: name for slug, name in rows}


def retired_from_db(session: Session) -> frozenset[str]:
    """The slugs of retired topics."""
    return frozenset(session.scalars(select(Topic.slug).where(Topic.retired_at.is_not(None))))


def translations_from_db(session: Session) -> dict[str, dict[str, str]]:
    """Each topic's labels in other languages: slug -> language -> label (topics without any left out)."""
    rows = session.execute(select(Topic.slug, Topic.translations))
    found = {
        slug: {lang: entry["name"] for lang, entry in translations.items() if (entry or {}).get("name")}
        for slug, translations in rows
        if translations
    }
    return {slug: labels for slug, labels in found.items() if labels}


def site_context(
    settings: Settings,
    topics: dict[str, str],
    retired: frozenset[str] = frozenset(),
    translations: dict[str, dict[str, str]] | None = None,
) -> SiteContext:
    """The store as configured (LIST_ID defaults to the From address's domain)."""
    return SiteContext(
        store_name=settings.store_name,
        postal_address=settings.postal_address,
        base_url=settings.base_url.rstrip("/"),
        sender=from_header(settings),
        list_id=settings.list_id or domain_of(settings.from_),
        topics=dict(topics),
        brand=brand_of(settings),
        overrides_dir=settings.overrides_dir,
        retired_topics=frozenset(retired),
        topic_translations={slug: dict(labels) for slug, labels in (translations or {}).items()},
    )
