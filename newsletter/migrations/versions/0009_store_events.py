"""store events (unique store event id) and store mail in the outbox (no subscriber needed)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_store_events_event_id")),
    )
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.alter_column("subscriber_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("store_event_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_outbox_emails_store_event_id_store_events"),
            "store_events",
            ["store_event_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_outbox_emails_store_event_id_store_events"), type_="foreignkey"
        )
        batch_op.drop_column("store_event_id")
        batch_op.alter_column("subscriber_id", existing_type=sa.Integer(), nullable=False)
    op.drop_table("store_events")
