"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import newsletter.models  # noqa: F401 - every table registered on the metadata
from newsletter.core.db import Base


def _comparable(item, name, kind, reflected, compare_to) -> bool:
    # SQLAlchemy reflects PostgreSQL's `lower(email) COLLATE "C"` without its COLLATE, so this one index
    # always looks changed; tests/test_admin_people.py checks its definition and that searches use it
    return not (kind == "index" and name == "ix_subscribers_address_key")


# SQLite's reflection cannot read an expression index (lower(email)); PostgreSQL's run compares it
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_migrated_schema_matches_the_models(database_url):
    """A column or index added to a model without its migration (or the reverse) fails here."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"include_object": _comparable})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_expression_indexes_match_the_models(database_url):
    """Alembic skips expression indexes, so compare them here: PostgreSQL builds each model index under a
    scratch name (rolled back) and its definition must read as the migrated one's. ``lower("email")`` once
    compiled to ``lower('email')``, a constant, while the migration indexed the column."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's reflection cannot read an expression index")
    from sqlalchemy import Column, text
    from sqlalchemy.schema import CreateIndex

    expression_indexes = [
        ix
        for table in Base.metadata.tables.values()
        for ix in table.indexes
        if any(not isinstance(e, Column) for e in ix.expressions)
    ]
    assert expression_indexes, "the filter found no expression index: it is broken"
    definition = text(
        "SELECT indexdef FROM pg_indexes WHERE indexname = :name AND schemaname = current_schema()"
    )
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            for index in expression_indexes:
                migrated = connection.execute(definition, {"name": index.name}).scalar()
                assert migrated, f"{index.name}: not in the migrated database"
                scratch = f"scratch_{index.name}"[:63]
                sql = str(CreateIndex(index).compile(connection)).replace(index.name, scratch, 1)
                connection.execute(text(sql))
                built = connection.execute(definition, {"name": scratch}).scalar()
                connection.rollback()
                assert built.replace(scratch, index.name, 1) == migrated, index.name
    finally:
        engine.dispose()
