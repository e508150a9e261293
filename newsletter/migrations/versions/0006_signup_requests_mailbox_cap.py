"""signup requests: a repeated signup's first name until confirmed; outbox rows name their request
and the mailbox they count against

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

Confirmation emails already queued (no ``request_event_id``) answer the subscriber's latest
request made before them. ``mailbox_hash`` is empty on older rows: for the first 24 hours after
the upgrade the daily cap's SQL fallback (used only while Redis is down) does not count them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signup_requests",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["consent_events.id"], name=op.f("fk_signup_requests_event_id_consent_events")
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_signup_requests_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_signup_requests")),
    )
    with op.batch_alter_table("signup_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signup_requests_subscriber_id"), ["subscriber_id"], unique=False)

    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_event_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("mailbox_hash", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_outbox_emails_request_event_id_consent_events"),
            "consent_events",
            ["request_event_id"],
            ["id"],
        )
        batch_op.create_index("ix_outbox_emails_mailbox", ["mailbox_hash", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox_emails", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_emails_mailbox")
        batch_op.drop_constraint(
            batch_op.f("fk_outbox_emails_request_event_id_consent_events"), type_="foreignkey"
        )
        batch_op.drop_column("mailbox_hash")
        batch_op.drop_column("request_event_id")
    with op.batch_alter_table("signup_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signup_requests_subscriber_id"))
    op.drop_table("signup_requests")
