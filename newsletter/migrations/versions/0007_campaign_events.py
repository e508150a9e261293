"""campaign events: every change of a campaign's status, with its reason and who made it

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25

Campaigns scheduled before the upgrade have no events for their past; their current
``pause_reason`` is still on the campaign row.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STATUSES = ("scheduled", "sending", "paused", "cancelled", "done")


def upgrade() -> None:
    op.create_table(
        "campaign_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("campaign_slug", sa.String(length=100), nullable=False),
        sa.Column(
            "from_status",
            sa.Enum(*STATUSES, name="campaignstatus", native_enum=False, length=20),
            nullable=True,
        ),
        sa.Column(
            "to_status",
            sa.Enum(*STATUSES, name="campaignstatus", native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_events_campaign_id_campaigns"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_events")),
    )
    with op.batch_alter_table("campaign_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_events_campaign_id"), ["campaign_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_campaign_events_campaign_slug"), ["campaign_slug"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("campaign_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_events_campaign_slug"))
        batch_op.drop_index(batch_op.f("ix_campaign_events_campaign_id"))
    op.drop_table("campaign_events")
