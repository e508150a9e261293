"""Subscribers, the topics they can choose and their subscriptions."""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.functions import FunctionElement

from newsletter.core import clock
from newsletter.core.db import Base, enum_type


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"  #: signed up, not confirmed yet
    ACTIVE = "active"  #: confirmed by double opt-in
    UNSUBSCRIBED = "unsubscribed"  #: left every topic
    ERASED = "erased"  #: personal data erased; the row only anchors the ledger


class Frequency(enum.StrEnum):
    """How often a subscriber lets the store write (on top of the store-wide caps)."""

    ANY = "any"  #: whenever there is news, within the store's caps
    WEEKLY = "weekly"  #: at most one marketing email a week
    MONTHLY = "monthly"  #: at most one marketing email a month


class SubscriptionStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"


def address_hash(normalized_email: str) -> str:
    """SHA-256 of the normalised, lower-cased address: the key that survives erasure."""
    return hashlib.sha256(normalized_email.lower().encode("utf-8")).hexdigest()


class address_key(FunctionElement):  # noqa: N801 - used like a SQL function
    """``lower(email)`` compared byte by byte: the dashboard's prefix search is a range on it.

    PostgreSQL compares text by the database's collation, where a range of a prefix is not the set of
    strings starting with it (``en_US`` skips punctuation); ``COLLATE "C"`` keeps byte order, which
    SQLite's default (BINARY) has already. The index and the query must spell it the same way.
    """

    type = String()
    name = "address_key"
    inherit_cache = True


@compiles(address_key)
def _address_key(element, compiler, **kw) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(address_key, "postgresql")
def _address_key_pg(element, compiler, **kw) -> str:
    return f'lower({compiler.process(element.clauses, **kw)}) COLLATE "C"'


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: normalised by email-validator; unique, compared case-insensitively via email_hash
    email: Mapped[str] = mapped_column(String(320))
    #: sha256 of the lower-cased normalised address; unique
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[SubscriberStatus] = mapped_column(
        enum_type(SubscriberStatus, 20),
        default=SubscriberStatus.PENDING,
    )
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    confirmed_at: Mapped[datetime | None]
    #: the subscriber's own cap, from the preference centre
    frequency: Mapped[Frequency] = mapped_column(enum_type(Frequency, 20), default=Frequency.ANY)
    #: no marketing mail before this UTC time; mail resumes by itself after it
    paused_until: Mapped[datetime | None]
    #: IANA name, for quiet hours
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    #: set when the person's data was erased; the row stays as a pseudonymous tombstone
    erased_at: Mapped[datetime | None]
    #: the person's language: their choice (preference centre), else their signup form's;
    #: NULL: the browser's, else the store's
    language: Mapped[str | None] = mapped_column(String(16))

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan"
    )
    partner_shares: Mapped[list[PartnerShare]] = relationship(cascade="all, delete-orphan")

    def __repr__(self) -> str:
        return f"<Subscriber {self.id} {self.status}>"


#: the dashboard's search by address prefix, any letter case, in address order (subscribers/lookup.py)
Index("ix_subscribers_address_key", address_key(Subscriber.email), Subscriber.id)


class SignupRequest(Base):
    """A signup for an address already on file: what it would change, kept until it is confirmed.

    The form is open to anyone, so a stranger can submit someone else's address with any name;
    nothing on the subscriber's row changes before the link sent for this very request is used.
    Its topics and wording are on its ledger event; the name is kept here because the ledger
    holds no names (erasure deletes these rows).
    """

    __tablename__ = "signup_requests"

    #: the request's ``signup_requested`` event, which the confirmation link names
    event_id: Mapped[int] = mapped_column(ForeignKey("consent_events.id"), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    #: the first name typed on the form (None: left empty)
    first_name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class Topic(Base):
    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: stable identifier used in campaign files and forms
    slug: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(300), default="")
    #: order on forms
    position: Mapped[int] = mapped_column(default=0)
    #: retired (``newsletter topics retire``): off the forms, no more mail; its subscriptions stay
    retired_at: Mapped[datetime | None]
    #: the label and description in other languages: {"de": {"name": ..., "description": ...}}
    #: (``newsletter topics rename --language``); a language without an entry gets name/description
    translations: Mapped[dict] = mapped_column(JSON, default=dict, server_default="{}")

    def name_in(self, language: str | None) -> str:
        """The label people reading ``language`` see (the default label if it has none there)."""
        return ((self.translations or {}).get(language) or {}).get("name") or self.name


class Subscription(Base):
    __tablename__ = "subscriptions"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), primary_key=True)
    status: Mapped[SubscriptionStatus] = mapped_column(
        enum_type(SubscriptionStatus, 20),
        default=SubscriptionStatus.PENDING,
    )
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    topic: Mapped[Topic] = relationship(lazy="joined")


class PartnerShare(Base):
    """Whether a subscriber lets the store share their address with one named partner."""

    __tablename__ = "partner_shares"
    #: an export's "changed since the last exchange" (and its withdrawals) read a range of it
    __table_args__ = (Index("ix_partner_shares_changed", "partner_id", "updated_at"),)

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    #: the partner's id (newsletter.models.partners.Partner)
    partner_id: Mapped[str] = mapped_column(String(50), primary_key=True)
    granted: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)
    #: evidence of the current grant, copied from its ledger event (exports read it from here)
    granted_at: Mapped[datetime | None]
    wording_version: Mapped[str | None] = mapped_column(String(50))
    wording_hash: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(100))
    #: ticked on the signup form; becomes a grant only when the person confirms their address
    requested_at: Mapped[datetime | None]
    #: when the address last went to this partner (an export): a withdrawal is told only then
    disclosed_at: Mapped[datetime | None]
