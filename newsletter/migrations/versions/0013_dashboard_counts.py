"""dashboard counts: consent_days and rollup_marks (the consent ledger per day), tallies with
tally_changes and their triggers (subscribers by status, suppressions)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

New tables and triggers on ``subscribers`` and ``suppressions``; no column changes. The tallies
start from one count of the subscribers and suppressions here; the ledger's rollup starts empty and
the first overview request counts the ledger once (subscribers/growth.py). The triggers append a
row to tally_changes for every change of a status and every suppression added or lifted: on
PostgreSQL one statement-level trigger per operation (a bulk insert of a million rows appends one
row per status), on SQLite a row-level one (SQLite has no other kind).
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

#: the status a subscriber row adds to: the tally's name
_NAME = "'subscribers:' || status"
PG_FUNCTIONS = (
    f"""
CREATE FUNCTION subscribers_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO tally_changes (name, delta) SELECT {_NAME}, count(*) FROM new_rows GROUP BY status;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO tally_changes (name, delta) SELECT {_NAME}, -count(*) FROM old_rows GROUP BY status;
  ELSE
    INSERT INTO tally_changes (name, delta)
    SELECT {_NAME}, sum(d) FROM (
      SELECT status, -1 AS d FROM old_rows UNION ALL SELECT status, 1 AS d FROM new_rows
    ) AS changed GROUP BY status HAVING sum(d) <> 0;
  END IF;
  RETURN NULL;
END
$$
""",
    """
CREATE FUNCTION suppressions_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO tally_changes (name, delta) SELECT 'suppressions', count(*) FROM new_rows
      HAVING count(*) > 0;
  ELSE
    INSERT INTO tally_changes (name, delta) SELECT 'suppressions', -count(*) FROM old_rows
      HAVING count(*) > 0;
  END IF;
  RETURN NULL;
END
$$
""",
)
PG_TRIGGERS = (
    "CREATE TRIGGER subscribers_tally_insert AFTER INSERT ON subscribers "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION subscribers_tally()",
    "CREATE TRIGGER subscribers_tally_update AFTER UPDATE ON subscribers REFERENCING OLD TABLE AS old_rows "
    "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION subscribers_tally()",
    "CREATE TRIGGER subscribers_tally_delete AFTER DELETE ON subscribers "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION subscribers_tally()",
    "CREATE TRIGGER suppressions_tally_insert AFTER INSERT ON suppressions "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION suppressions_tally()",
    "CREATE TRIGGER suppressions_tally_delete AFTER DELETE ON suppressions "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION suppressions_tally()",
)
SQLITE_TRIGGERS = (
    "CREATE TRIGGER subscribers_tally_insert AFTER INSERT ON subscribers BEGIN "
    "INSERT INTO tally_changes (name, delta) VALUES ('subscribers:' || NEW.status, 1); END",
    "CREATE TRIGGER subscribers_tally_update AFTER UPDATE OF status ON subscribers "
    "WHEN OLD.status IS NOT NEW.status BEGIN INSERT INTO tally_changes (name, delta) "
    "VALUES ('subscribers:' || OLD.status, -1), ('subscribers:' || NEW.status, 1); END",
    "CREATE TRIGGER subscribers_tally_delete AFTER DELETE ON subscribers BEGIN "
    "INSERT INTO tally_changes (name, delta) VALUES ('subscribers:' || OLD.status, -1); END",
    "CREATE TRIGGER suppressions_tally_insert AFTER INSERT ON suppressions BEGIN "
    "INSERT INTO tally_changes (name, delta) VALUES ('suppressions', 1); END",
    "CREATE TRIGGER suppressions_tally_delete AFTER DELETE ON suppressions BEGIN "
    "INSERT INTO tally_changes (name, delta) VALUES ('suppressions', -1); END",
)
TRIGGERS = {
    "subscribers": ("subscribers_tally_insert", "subscribers_tally_update", "subscribers_tally_delete"),
    "suppressions": ("suppressions_tally_insert", "suppressions_tally_delete"),
}


def upgrade() -> None:
    op.create_table(
        "consent_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "kind", name=op.f("pk_consent_days")),
    )
    op.create_table(
        "rollup_marks",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rollup_marks")),
    )
    op.create_table(
        "tallies",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tallies")),
    )
    op.create_table(
        "tally_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tally_changes")),
    )
    op.execute(f"INSERT INTO tallies (name, n) SELECT {_NAME}, count(*) FROM subscribers GROUP BY status")
    op.execute("INSERT INTO tallies (name, n) SELECT 'suppressions', count(*) FROM suppressions")
    if op.get_bind().dialect.name == "postgresql":
        for statement in (*PG_FUNCTIONS, *PG_TRIGGERS):
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, names in TRIGGERS.items():
        for name in names:
            op.execute(f"DROP TRIGGER {name} ON {table}" if postgresql else f"DROP TRIGGER {name}")
        if postgresql:
            op.execute(f"DROP FUNCTION {table}_tally()")
    op.drop_table("tally_changes")
    op.drop_table("tallies")
    op.drop_table("rollup_marks")
    op.drop_table("consent_days")
