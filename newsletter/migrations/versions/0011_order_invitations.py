"""order invitations: the one newsletter invitation per address, sent with a first order's thank-you

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

Adds ``order_invitations`` (unique address hash, the order_placed event that carried it, when the
person accepted). Existing addresses have no row: their next first order may invite them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("store_event_id", sa.Integer(), nullable=True),
        sa.Column("invited_at", sa.DateTime(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["store_event_id"],
            ["store_events.id"],
            name=op.f("fk_order_invitations_store_event_id_store_events"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_invitations")),
        sa.UniqueConstraint("email_hash", name=op.f("uq_order_invitations_email_hash")),
    )
    # "no earlier order_placed for this address, in any letter case", without a scan per order
    op.create_index("ix_store_events_email_lower", "store_events", [sa.text("lower(email)")])


def downgrade() -> None:
    op.drop_index("ix_store_events_email_lower", table_name="store_events")
    op.drop_table("order_invitations")
