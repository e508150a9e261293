"""a subscriber's language; the history of partner exchanges

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

``subscribers.language``: the person's own choice (NULL: the browser's, else the store's default).
``partner_exchanges``: one row per exchange with a partner, either way (export or import, by
file, API, push or pull), with its outcome; disclosure events and ``partners history`` name it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("language", sa.String(16), nullable=True))
    op.create_table(
        "partner_exchanges",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("partner_id", sa.String(50), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("previous_id", sa.Integer(), sa.ForeignKey("partner_exchanges.id"), nullable=True),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("invited", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
    )
    op.create_index("ix_partner_exchanges_partner_id", "partner_exchanges", ["partner_id"])


def downgrade() -> None:
    op.drop_index("ix_partner_exchanges_partner_id", table_name="partner_exchanges")
    op.drop_table("partner_exchanges")
    # not batch mode: copying subscribers would meet its lower(email) index, which SQLite's
    # reflection cannot read; SQLite drops a plain column itself since 3.35
    op.drop_column("subscribers", "language")
