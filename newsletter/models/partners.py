"""Partner stores, what they told us about opt-outs, and the imports we took from them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.core import clock
from newsletter.core.db import Base


class Partner(Base):
    """A partner store we exchange consented lists and suppressions with."""

    __tablename__ = "partners"

    #: the partner's own store id (its NEWSLETTER_STORE_ID): a-z, 0-9 and -
    id: Mapped[str] = mapped_column(String(50), primary_key=True)
    #: the name people see in the consent wording ("Share ... with Pet Care Co")
    name: Mapped[str] = mapped_column(String(100))
    #: shared secret of the pair: signs files both ways and authenticates API requests
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    #: the partner engine's base URL (https, or http on loopback): push and pull call its API
    url: Mapped[str | None] = mapped_column(String(300))
    #: scheduled exchanges: "daily", "weekly" or "off"
    sync: Mapped[str] = mapped_column(String(10), default="off", server_default="off")
    #: when the workers' tick runs the next scheduled exchange (None: not scheduled)
    next_sync_at: Mapped[datetime | None] = mapped_column(index=True)


class PartnerSuppression(Base):
    """An address hash the partner says opted out there: never invite it on that partner's word."""

    __tablename__ = "partner_suppressions"

    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True)
    #: sha256 of the lower-cased normalised address
    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=clock.now)


class PartnerImport(Base):
    """The ledger of files taken from partners: which file (SHA-256), when, what came of it."""

    __tablename__ = "partner_imports"
    __table_args__ = (
        # One unfinished import per file: a second run of it resumes that one (partners/checkpoint.py).
        Index(
            "uq_partner_imports_unfinished",
            "partner_id",
            "kind",
            "file_sha256",
            unique=True,
            sqlite_where=text("completed_at IS NULL"),
            postgresql_where=text("completed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: kept as text, not a foreign key: the record outlives the partner's removal
    partner_id: Mapped[str] = mapped_column(String(50))
    #: "contacts" or "suppressions"
    kind: Mapped[str] = mapped_column(String(20))
    #: SHA-256 of the whole file as received
    file_sha256: Mapped[str] = mapped_column(String(64))
    #: when the partner made the file (from its signed header)
    file_created_at: Mapped[datetime]
    imported_at: Mapped[datetime] = mapped_column(default=clock.now)
    #: "cli" or "api"
    channel: Mapped[str] = mapped_column(String(20))
    records: Mapped[int] = mapped_column(default=0)
    #: counts: invited, skipped per reason (so far, while the import is under way)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the checkpoint: records of the file applied so far, committed with each chunk
    applied_records: Mapped[int] = mapped_column(default=0, server_default="0")
    #: None while the import is under way or was stopped; a run of the same file resumes it
    completed_at: Mapped[datetime | None]
    #: the topics its people confirm into (a resumed import keeps them)
    topics: Mapped[list[str] | None] = mapped_column(JSON)


class PartnerInvitation(Base):
    """An invitation to confirm sent on the strength of consent given at a partner store."""

    __tablename__ = "partner_invitations"
    __table_args__ = (
        Index("ix_partner_invitations_subscriber", "subscriber_id", "created_at"),
        # Nobody is invited twice by one import, whatever a restart replays.
        Index("uq_partner_invitations_import_subscriber", "import_id", "subscriber_id", unique=True),
    )

    outbox_id: Mapped[int] = mapped_column(
        ForeignKey("outbox_emails.id", ondelete="CASCADE"), primary_key=True
    )
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    partner_id: Mapped[str] = mapped_column(String(50))
    #: the partner's display name when the invitation was made (the email names it)
    partner_name: Mapped[str] = mapped_column(String(100))
    import_id: Mapped[int] = mapped_column(ForeignKey("partner_imports.id"))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class PartnerExchange(Base):
    """One exchange with a partner, either way: a file or API export, a push, a pull, an import.

    The history of ``partners history`` and the exchange that a disclosure event names; an
    export's ``since`` is the previous successful exchange's start, so only what changed travels.
    """

    __tablename__ = "partner_exchanges"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: kept as text, not a foreign key: the history outlives the partner's removal
    partner_id: Mapped[str] = mapped_column(String(50), index=True)
    #: "export" (to the partner) or "import" (from the partner)
    direction: Mapped[str] = mapped_column(String(10))
    #: "file", "api", "push" or "pull"
    channel: Mapped[str] = mapped_column(String(10))
    #: "running", "done" or "failed"
    status: Mapped[str] = mapped_column(String(10), default="running")
    started_at: Mapped[datetime] = mapped_column(default=clock.now)
    finished_at: Mapped[datetime | None]
    #: the exchange this one continues from (only what changed since it travels)
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("partner_exchanges.id"))
    records: Mapped[int] = mapped_column(default=0)
    invited: Mapped[int] = mapped_column(default=0)
    #: skipped records per reason, e.g. {"suppressed": 3, "opted_out_here": 1}
    skipped: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: one line, for a failed exchange
    error: Mapped[str | None] = mapped_column(String(500))
    #: the partner's id of the same exchange (its file header names it); our next pull names it
    remote_id: Mapped[int | None]


class PartnerInviteDay(Base):
    """Invitations handed to SMTP on one UTC day because of one partner: the daily cap's count."""

    __tablename__ = "partner_invite_days"

    partner_id: Mapped[str] = mapped_column(String(50), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)
    sent: Mapped[int] = mapped_column(default=0)
