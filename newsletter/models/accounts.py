"""The store's own people who sign in to /admin: an address, a role and an Argon2 password hash."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core import clock
from newsletter.core.db import Base, enum_type
from newsletter.core.vocabulary import Role

__all__ = ["Account", "Role"]


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: the sign-in name, lower case; also the actor in campaign_events (hence at most 100)
    email: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[Role] = mapped_column(enum_type(Role, 20))
    #: argon2id, PHC string format (salt and parameters inside)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    #: a reset signs out every session of the account (the session names the time it signed in after)
    password_changed_at: Mapped[datetime] = mapped_column(default=clock.now)
    last_login_at: Mapped[datetime | None]
