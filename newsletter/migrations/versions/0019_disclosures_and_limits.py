"""partner disclosures and limits

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02

``partner_shares.disclosed_at``: when the person's address last went to that partner (an export),
so that a withdrawal is told only to a partner that received the address.
``outbox_emails.not_before``: a row held back until then (a partner's daily invitation cap).
``partner_invite_days``: invitations handed to SMTP per partner per UTC day (the cap's count).
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("partner_shares", sa.Column("disclosed_at", sa.DateTime(), nullable=True))
    op.add_column("outbox_emails", sa.Column("not_before", sa.DateTime(), nullable=True))
    op.create_table(
        "partner_invite_days",
        sa.Column("partner_id", sa.String(50), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("sent", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("partner_invite_days")
    # plain DROP COLUMN (SQLite >= 3.35 too): a batch copy would reflect subscribers' expression index
    op.execute("ALTER TABLE outbox_emails DROP COLUMN not_before")
    op.execute("ALTER TABLE partner_shares DROP COLUMN disclosed_at")
