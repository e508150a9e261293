"""partner imports: a checkpoint per import, so that a stopped import resumes where it stopped

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

``partner_imports`` gains ``applied_records`` (records of the file applied so far, committed
with each chunk), ``completed_at`` (NULL while under way) and ``topics``; at most one unfinished
import per partner, kind and file (a partial unique index). Imports made before this were done
in one transaction: they are marked complete. ``partner_invitations`` gets a unique index on
(import, subscriber): one import never invites a person twice.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "partner_imports", sa.Column("applied_records", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("partner_imports", sa.Column("completed_at", sa.DateTime(), nullable=True))
    op.add_column("partner_imports", sa.Column("topics", sa.JSON(), nullable=True))
    op.execute("UPDATE partner_imports SET completed_at = imported_at, applied_records = records")
    op.create_index(
        "uq_partner_imports_unfinished",
        "partner_imports",
        ["partner_id", "kind", "file_sha256"],
        unique=True,
        sqlite_where=sa.text("completed_at IS NULL"),
        postgresql_where=sa.text("completed_at IS NULL"),
    )
    op.create_index(
        "uq_partner_invitations_import_subscriber",
        "partner_invitations",
        ["import_id", "subscriber_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_partner_invitations_import_subscriber", table_name="partner_invitations")
    op.drop_index("uq_partner_imports_unfinished", table_name="partner_imports")
    with op.batch_alter_table("partner_imports") as batch:
        batch.drop_column("topics")
        batch.drop_column("completed_at")
        batch.drop_column("applied_records")
