"""topics retired

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02

``topics.retired_at``: when the topic was retired (``newsletter topics retire``); NULL while it is
offered. A retired topic's subscriptions stay as they are (the person's history), it is just no
longer offered nor mailed. A downgrade forgets which topics were retired: they would be offered
and mailed again, so retire them again (or delete their campaigns) after upgrading back.
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("topics", sa.Column("retired_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    # Not a batch copy: that drops and re-creates ``topics``, which ``subscriptions`` references, and
    # SQLite (foreign keys on) refuses the DROP TABLE as soon as anyone is subscribed. DROP COLUMN
    # works on PostgreSQL and on SQLite >= 3.35 (as in 0019).
    op.drop_column("topics", "retired_at")
