"""tallies: a campaign's numbers kept by triggers, so that its report and the dashboard read a few rows

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

Two append-only tables of signed counts (models/tallies.py) and the triggers that fill them on
every INSERT, UPDATE and DELETE of ``deliveries`` and ``delivery_events``: row triggers on SQLite,
statement triggers with transition tables on PostgreSQL (one row per group and statement, no
lock on a shared counter). The existing rows are counted once here.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: tally column -> the expression over a deliveries row ``r`` that it counts (0 or 1)
MEASURES = {
    "hard": "r.bounce_kind = 'hard'",
    "soft": "r.bounce_kind = 'soft'",
    "complained": "r.complained_at IS NOT NULL",
    "unsubscribed": "r.unsubscribed_at IS NOT NULL",
    "opened": "r.opened_at IS NOT NULL",
    "clicked": "r.first_click_at IS NOT NULL",
    "redeemed": "r.redeemed_at IS NOT NULL",
    "codes": "r.reward_code IS NOT NULL",
    "codes_redeemed": "r.reward_redeemed_at IS NOT NULL",
}
#: hour metric -> the deliveries' timestamp it is bucketed by
TIMES = {
    "sent": "sent_at",
    "bounced": "bounced_at",
    "complained": "complained_at",
    "unsubscribed": "unsubscribed_at",
    "clicked": "first_click_at",
    "redeemed": "redeemed_at",
    "code_redeemed": "reward_redeemed_at",
}
#: the deliveries' columns the triggers read besides the group's
ROW_TIMES = (
    "complained_at",
    "unsubscribed_at",
    "opened_at",
    "first_click_at",
    "redeemed_at",
    "reward_code",
    "reward_redeemed_at",
    "sent_at",
    "bounced_at",
)
GROUP = "campaign_id, wave_id, state, reason"
TALLY_COLUMNS = f"{GROUP}, n, {', '.join(MEASURES)}"
HOUR_COLUMNS = "campaign_id, hour, metric, link, n"
SQLITE_HOUR = "'%Y-%m-%d %H:00:00.000000'"  # SQLAlchemy's own DateTime text on SQLite


def _count(expr: str, sign: str) -> str:
    return f"sum(CASE WHEN {expr} THEN {sign} ELSE 0 END)"


def _group_select(source: str, sign: str, dialect: str) -> str:
    """Per group of SOURCE (rows ``r`` with a ``sign``): signed counts, groups netting nothing left out."""
    measures = ", ".join(f"{_count(e, sign)} AS {name}" for name, e in MEASURES.items())
    inner = (
        f"SELECT r.campaign_id, r.wave_id, r.state, r.reason, sum({sign}) AS n, {measures} "
        f"FROM {source} GROUP BY r.campaign_id, r.wave_id, r.state, r.reason"
    )
    nonzero = " OR ".join(f"d.{name} <> 0" for name in ("n", *MEASURES))
    return f"SELECT * FROM ({inner}) AS d WHERE {nonzero}"


def _hour_select(source: str, sign: str, dialect: str) -> str:
    """Per campaign, hour and metric of SOURCE: the signed counts of the deliveries' timestamps."""
    if dialect == "postgresql":
        pairs = ", ".join(f"('{m}', r.{c})" for m, c in TIMES.items())
        unpivot = f"CROSS JOIN LATERAL (VALUES {pairs}) AS m(metric, at)"
        hour = "date_trunc('hour', m.at)"
        link = "CAST(NULL AS INTEGER)"
    else:
        unions = " UNION ALL ".join(f"SELECT '{m}' AS metric, '{c}' AS col" for m, c in TIMES.items())
        cases = " ".join(f"WHEN '{m}' THEN r.{c}" for m, c in TIMES.items())
        unpivot = f"CROSS JOIN ({unions}) AS mm"
        return (
            "SELECT * FROM (SELECT r.campaign_id, "
            f"strftime({SQLITE_HOUR}, CASE mm.metric {cases} END) AS hour, "
            f"mm.metric, NULL AS link, sum({sign}) AS n FROM {source} {unpivot} "
            f"WHERE (CASE mm.metric {cases} END) IS NOT NULL GROUP BY 1, 2, 3) AS d WHERE d.n <> 0"
        )
    return (
        f"SELECT * FROM (SELECT r.campaign_id, {hour} AS hour, m.metric, {link} AS link, sum({sign}) AS n "
        f"FROM {source} {unpivot} WHERE m.at IS NOT NULL GROUP BY 1, 2, 3) AS d WHERE d.n <> 0"
    )


def _event_select(source: str, sign: str, dialect: str) -> str:
    """Clicks and scanner visits per campaign, hour and link."""
    hour = "date_trunc('hour', r.at)" if dialect == "postgresql" else f"strftime({SQLITE_HOUR}, r.at)"
    return (
        f"SELECT * FROM (SELECT r.campaign_id, {hour} AS hour, r.kind AS metric, r.link, sum({sign}) AS n "
        f"FROM {source} WHERE r.campaign_id IS NOT NULL AND r.kind IN ('click', 'scanner') "
        f"GROUP BY 1, 2, 3, 4) AS d WHERE d.n <> 0"
    )


def _postgresql_triggers() -> list[str]:
    def body(table: str) -> str:
        select_of = {"deliveries": (_group_select, _hour_select), "delivery_events": (_event_select,)}[table]
        into = {_group_select: ("delivery_tallies", TALLY_COLUMNS)}
        branches = []
        for op_name, source in (
            ("INSERT", "(SELECT 1 AS sign, * FROM new_rows) AS r"),
            ("DELETE", "(SELECT -1 AS sign, * FROM old_rows) AS r"),
            (
                "UPDATE",
                "(SELECT -1 AS sign, * FROM old_rows UNION ALL SELECT 1 AS sign, * FROM new_rows) AS r",
            ),
        ):
            statements = []
            for fn in select_of:
                target, columns = into.get(fn, ("campaign_hour_tallies", HOUR_COLUMNS))
                statements.append(f"INSERT INTO {target} ({columns}) {fn(source, 'r.sign', 'postgresql')};")
            branches.append(f"IF TG_OP = '{op_name}' THEN {' '.join(statements)} END IF;")
        return " ".join(branches)

    ddl = []
    for table in ("deliveries", "delivery_events"):
        ddl.append(
            f"CREATE FUNCTION tally_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {body(table)} RETURN NULL; END $$"
        )
        for op_name, refs in (
            ("INSERT", "NEW TABLE AS new_rows"),
            ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
            ("DELETE", "OLD TABLE AS old_rows"),
        ):
            ddl.append(
                f"CREATE TRIGGER tally_{table}_{op_name.lower()} AFTER {op_name} ON {table} "
                f"REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION tally_{table}()"
            )
    return ddl


def _sqlite_triggers() -> list[str]:
    def row(ref: str, sign: int) -> str:
        """The trigger's OLD or NEW row as a one-row source ``r`` with its sign."""
        names = ("campaign_id", "wave_id", "state", "reason", "bounce_kind", *ROW_TIMES)
        return f"(SELECT {sign} AS sign, {', '.join(f'{ref}.{c} AS {c}' for c in names)}) AS r"

    def event(ref: str, sign: int) -> str:
        return (
            f"(SELECT {sign} AS sign, {ref}.campaign_id AS campaign_id, {ref}.at AS at, "
            f"{ref}.kind AS kind, {ref}.link AS link) AS r"
        )

    def both(make, fn, into: str, columns: str, refs) -> str:
        return " ".join(
            f"INSERT INTO {into} ({columns}) {fn(make(ref, sign), 'r.sign', 'sqlite')};" for ref, sign in refs
        )

    # an UPDATE counts only when a counted column changed (most updates of a send change the state)
    counted = " OR ".join(
        f"old.{c} IS NOT new.{c}"
        for c in ("campaign_id", "wave_id", "state", "reason", "bounce_kind", *ROW_TIMES)
    )
    ddl = []
    for op_name, refs, when in (
        ("INSERT", (("new", 1),), ""),
        ("DELETE", (("old", -1),), ""),
        ("UPDATE", (("old", -1), ("new", 1)), f" WHEN {counted}"),
    ):
        ddl.append(
            f"CREATE TRIGGER tally_deliveries_{op_name.lower()} AFTER {op_name} ON deliveries "
            f"FOR EACH ROW{when} "
            f"BEGIN {both(row, _group_select, 'delivery_tallies', TALLY_COLUMNS, refs)} "
            f"{both(row, _hour_select, 'campaign_hour_tallies', HOUR_COLUMNS, refs)} END"
        )
        event_when = when and (
            " WHEN old.kind IS NOT new.kind OR old.link IS NOT new.link OR old.at IS NOT new.at "
            "OR old.campaign_id IS NOT new.campaign_id"
        )
        ddl.append(
            f"CREATE TRIGGER tally_delivery_events_{op_name.lower()} AFTER {op_name} ON delivery_events "
            f"FOR EACH ROW{event_when} "
            f"BEGIN {both(event, _event_select, 'campaign_hour_tallies', HOUR_COLUMNS, refs)} END"
        )
    return ddl


def upgrade() -> None:
    columns = [sa.Column(name, sa.Integer(), nullable=False) for name in ("n", *MEASURES)]
    op.create_table(
        "delivery_tallies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("wave_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        *columns,
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_tallies")),
    )
    op.create_index("ix_delivery_tallies_campaign", "delivery_tallies", ["campaign_id"])
    op.create_table(
        "campaign_hour_tallies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("metric", sa.String(length=20), nullable=False),
        sa.Column("link", sa.Integer(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_hour_tallies")),
    )
    op.create_index("ix_campaign_hour_tallies_campaign", "campaign_hour_tallies", ["campaign_id", "metric"])
    dialect = op.get_bind().dialect.name
    # what is there already, counted once
    for into, columns, select, source in (
        ("delivery_tallies", TALLY_COLUMNS, _group_select, "deliveries"),
        ("campaign_hour_tallies", HOUR_COLUMNS, _hour_select, "deliveries"),
        ("campaign_hour_tallies", HOUR_COLUMNS, _event_select, "delivery_events"),
    ):
        op.execute(f"INSERT INTO {into} ({columns}) {select(f'{source} AS r', '1', dialect)}")
    for statement in _postgresql_triggers() if dialect == "postgresql" else _sqlite_triggers():
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in ("deliveries", "delivery_events"):
        for op_name in ("insert", "update", "delete"):
            on = f" ON {table}" if dialect == "postgresql" else ""
            op.execute(f"DROP TRIGGER IF EXISTS tally_{table}_{op_name}{on}")
        if dialect == "postgresql":
            op.execute(f"DROP FUNCTION IF EXISTS tally_{table}()")
    op.drop_table("campaign_hour_tallies")
    op.drop_table("delivery_tallies")
