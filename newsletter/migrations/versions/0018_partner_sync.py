"""partners over the wire: the partner engine's URL, its sync schedule; an exchange's remote id

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

``partners.url``: the partner engine's base URL (push and pull call its partner API).
``partners.sync``: "daily", "weekly" or "off"; ``partners.next_sync_at``: when the workers'
tick runs the next scheduled exchange. ``partner_exchanges.remote_id``: the partner's own id of
the exchange (named in the file header), which our next request names as the previous one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partners") as batch:
        batch.add_column(sa.Column("url", sa.String(300), nullable=True))
        batch.add_column(sa.Column("sync", sa.String(10), nullable=False, server_default="off"))
        batch.add_column(sa.Column("next_sync_at", sa.DateTime(), nullable=True))
    op.create_index("ix_partners_next_sync_at", "partners", ["next_sync_at"])
    with op.batch_alter_table("partner_exchanges") as batch:
        batch.add_column(sa.Column("remote_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("partner_exchanges") as batch:
        batch.drop_column("remote_id")
    op.drop_index("ix_partners_next_sync_at", table_name="partners")
    with op.batch_alter_table("partners") as batch:
        batch.drop_column("next_sync_at")
        batch.drop_column("sync")
        batch.drop_column("url")
