"""Subscribers, the topics they can choose and their subscriptions."""

from __future__ import annotations

import enum
import hashlib
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter import clock
from newsletter.db import Base


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"  #: signed up, not confirmed yet
    ACTIVE = "active"  #: confirmed by double opt-in
    UNSUBSCRIBED = "unsubscribed"  #: left every topic


class SubscriptionStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"


def address_hash(normalized_email: str) -> str:
    """SHA-256 of the normalised, lower-cased address: the key that survives erasure."""
    return hashlib.sha256(normalized_email.lower().encode("utf-8")).hexdigest()


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: normalised by email-validator; unique, compared case-insensitively via email_hash
    email: Mapped[str] = mapped_column(String(320))
    #: sha256 of the lower-cased normalised address; unique
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[SubscriberStatus] = mapped_column(
        Enum(SubscriberStatus, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]),
        default=SubscriberStatus.PENDING,
    )
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    confirmed_at: Mapped[datetime | None]

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"<Subscriber {self.id} {self.status}>"


class Topic(Base):
    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: stable identifier used in campaign files and forms
    slug: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(300), default="")
    #: order on forms
    position: Mapped[int] = mapped_column(default=0)


class Subscription(Base):
    __tablename__ = "subscriptions"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), primary_key=True)
    status: Mapped[SubscriptionStatus] = mapped_column(
        Enum(
            SubscriptionStatus, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]
        ),
        default=SubscriptionStatus.PENDING,
    )
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    topic: Mapped[Topic] = relationship(lazy="joined")
