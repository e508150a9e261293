"""consent_days and rollup_marks (the dashboard's daily counts of the consent ledger); an index on
subscribers.status (its totals)

Revision ID: overview_consent_days
Revises: 0012
Create Date: 2026-12-02

New tables and an index; nothing else changes. The rollup starts empty: the first overview
request counts the ledger once (subscribers/growth.py), later ones only the new events.
"""

import sqlalchemy as sa
from alembic import op

revision = "overview_consent_days"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consent_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "kind", name=op.f("pk_consent_days")),
    )
    op.create_table(
        "rollup_marks",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rollup_marks")),
    )
    op.create_index("ix_subscribers_status", "subscribers", ["status"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_status", table_name="subscribers")
    op.drop_table("rollup_marks")
    op.drop_table("consent_days")
