"""reward codes: pools of codes the store made, and the code each delivery carries

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Adds ``reward_codes`` (a pool's codes, each assigned to at most one delivery) and
``deliveries.reward_code`` and ``reward_redeemed_at``. Existing rows carry no code.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reward_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(length=100), nullable=False),
        sa.Column("code", sa.String(length=200), nullable=False),
        sa.Column("loaded_at", sa.DateTime(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("assigned_at", sa.DateTime(), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_reward_codes_delivery_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_codes")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_reward_codes_delivery_id")),
        sa.UniqueConstraint("pool", "code", name=op.f("uq_reward_codes_pool")),
    )
    with op.batch_alter_table("reward_codes", schema=None) as batch_op:
        batch_op.create_index("ix_reward_codes_free", ["pool", "delivery_id"], unique=False)
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reward_code", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("reward_redeemed_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("reward_redeemed_at")
        batch_op.drop_column("reward_code")
    with op.batch_alter_table("reward_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_reward_codes_free")
    op.drop_table("reward_codes")
