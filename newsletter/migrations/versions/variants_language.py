"""the language each campaign message was sent in

Revision ID: variants_language
Revises: 0022
Create Date: 2026-12-02

``deliveries.language``: the variant a recipient got (their language's, else the store default's,
else the campaign folder's default email); written in the statement that marks the row sent.
"""

import sqlalchemy as sa
from alembic import op

revision = "variants_language"
down_revision = "0022"  # 0019 before main was merged in (0020-0022); the lead renumbers
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("language", sa.String(16), nullable=True))


def downgrade() -> None:
    # plain DROP COLUMN (SQLite >= 3.35 too), as 0019 does: no batch copy of the table
    op.execute("ALTER TABLE deliveries DROP COLUMN language")
