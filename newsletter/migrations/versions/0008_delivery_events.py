"""delivery events: bounces, complaints, clicks, opens and unsubscribes on the row that caused them

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Adds the append-only ``delivery_events`` table and the summary columns of ``deliveries``
(``bounced_at``, ``bounce_kind``, ``complained_at``, ``first_click_at``, ``opened_at``,
``unsubscribed_at``). Existing rows have no feedback: every new column is empty.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

KINDS = ("bounce_hard", "bounce_soft", "complaint", "click", "scanner", "open", "unsubscribe", "delivered")
SUMMARY = ("bounced_at", "complained_at", "first_click_at", "opened_at", "unsubscribed_at")


def upgrade() -> None:
    op.create_table(
        "delivery_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.Enum(*KINDS, name="signalkind", native_enum=False, length=20), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("provider_event_id", sa.String(length=255), nullable=True),
        sa.Column("status_code", sa.String(length=16), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("link", sa.Integer(), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_delivery_events_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_events_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["outbox_emails.id"],
            name=op.f("fk_delivery_events_outbox_id_outbox_emails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_events")),
        sa.UniqueConstraint("source", "provider_event_id", name=op.f("uq_delivery_events_source")),
    )
    with op.batch_alter_table("delivery_events", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_events_campaign", ["campaign_id", "kind", "link"], unique=False)
        batch_op.create_index("ix_delivery_events_delivery", ["delivery_id", "kind"], unique=False)
        batch_op.create_index("ix_delivery_events_address", ["email_hash", "kind", "at"], unique=False)
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        for name in SUMMARY:
            batch_op.add_column(sa.Column(name, sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("bounce_kind", sa.String(length=10), nullable=True))
        batch_op.create_index("ix_deliveries_message_id", ["message_id"], unique=False)
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_emails_message_id", ["message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_emails_message_id")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_message_id")
        batch_op.drop_column("bounce_kind")
        for name in reversed(SUMMARY):
            batch_op.drop_column(name)
    with op.batch_alter_table("delivery_events", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_events_address")
        batch_op.drop_index("ix_delivery_events_delivery")
        batch_op.drop_index("ix_delivery_events_campaign")
    op.drop_table("delivery_events")
