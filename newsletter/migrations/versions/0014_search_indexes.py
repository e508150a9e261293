"""dashboard people pages: indexes for the address search, the suppression list by reason, store mail

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

Three indexes, no data change. ``ix_subscribers_address_key`` is ``lower(email)`` (byte order:
``COLLATE "C"`` on PostgreSQL, SQLite's default elsewhere) and ``id``: /admin/subscribers?q=
reads a prefix as a range of it, page after page by keyset. ``ix_suppressions_reason``:
/admin/suppressions?reason= newest first without reading the whole list.
``ix_outbox_emails_store_event``: a person's store mail by its events (a profile, a data export)
without reading the outbox. Building them reads each table once (a million subscribers: a few
seconds on PostgreSQL, writes wait meanwhile).
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    key = 'lower(email) COLLATE "C"' if op.get_bind().dialect.name == "postgresql" else "lower(email)"
    op.create_index("ix_subscribers_address_key", "subscribers", [sa.text(key), "id"])
    op.create_index("ix_suppressions_reason", "suppressions", ["reason", "id"])
    op.create_index("ix_outbox_emails_store_event", "outbox_emails", ["store_event_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_emails_store_event", table_name="outbox_emails")
    op.drop_index("ix_suppressions_reason", table_name="suppressions")
    op.drop_index("ix_subscribers_address_key", table_name="subscribers")
