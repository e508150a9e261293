"""the language each campaign message was sent in

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02

``deliveries.language``: the variant a recipient got (their language's, else the store default's,
else the campaign folder's default email); written in the statement that marks the row sent.
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("language", sa.String(16), nullable=True))


def downgrade() -> None:
    # plain DROP COLUMN (SQLite >= 3.35 too), as 0019 does: no batch copy of the table
    op.execute("ALTER TABLE deliveries DROP COLUMN language")
