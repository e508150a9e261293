"""Engine, sessions and the declarative base; no Flask here so jobs and CLI share it."""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Enum, MetaData, any_, bindparam, create_engine, event, insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def enum_type(enum_class: type[enum.Enum], length: int = 40) -> Enum:
    """A portable enum column: the values as VARCHAR, no database enum type to migrate."""
    return Enum(enum_class, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e])


#: the dialects' own INSERT: it has ON CONFLICT DO NOTHING / DO UPDATE (the same on both)
_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def dialect_insert(session: Session, table):
    """``INSERT`` into ``table`` for the session's database, with its ``on_conflict_do_*`` methods."""
    return _INSERT[session.get_bind().dialect.name](table)


def array_param(name: str, values: list, item_type):
    """One PostgreSQL array parameter of ``item_type`` (for ``= ANY`` or ``unnest``)."""
    return bindparam(name, list(values), type_=postgresql.ARRAY(item_type))


def among(session: Session, column, values: list):
    """``column IN values``; on PostgreSQL ``= ANY(array)``, one parameter instead of one per value.

    SQLAlchemy renders a long IN list into the SQL text itself, so every batch's statement is a
    new string for it and for psycopg to compile and parse: that cost more than the query.
    """
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(array_param(None, values, column.type))
    return column.in_(values)


_PG_ARRAY = {"INTEGER": "integer[]", "DATETIME": "timestamp[]", "BOOLEAN": "boolean[]", "JSON": "json[]"}


def insert_rows(session: Session, model, rows: list[dict], returning: tuple[str, ...] = ()) -> list[tuple]:
    """Insert many rows in one statement; the ``returning`` columns of each, in no particular order.

    On PostgreSQL the rows travel as one array per column (``INSERT ... SELECT FROM unnest``):
    a short, cacheable statement instead of thousands of placeholders to parse, several times
    faster for batches of a thousand. Elsewhere, SQLAlchemy's bulk INSERT.
    """
    if not rows:
        return []
    if session.get_bind().dialect.name != "postgresql":
        statement = insert(model)
        if returning:
            statement = statement.returning(*(getattr(model, c) for c in returning))
        result = session.execute(statement, rows)
        return [tuple(r) for r in result] if returning else []
    table = model.__table__
    columns = list(rows[0])
    casts, params = [], {}
    for name in columns:
        column = table.c[name]
        kind = type(column.type).__name__.upper()
        casts.append(f"CAST(:{name} AS {_PG_ARRAY.get(kind, 'varchar[]')})")
        values = [row[name] for row in rows]
        if kind == "JSON":
            values = [json.dumps(v) for v in values]
        elif kind == "ENUM":
            values = [v.value if v is not None else None for v in values]
        params[name] = values
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({', '.join(casts)})"
    if returning:
        sql += " RETURNING " + ", ".join(returning)
    result = session.execute(text(sql), params)
    return [tuple(r) for r in result] if returning else []


def copy_rows(session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """PostgreSQL: ``rows`` (tuples in ``columns`` order) into ``table`` by ``COPY ... FROM STDIN``.

    psycopg's C path: for a chunk of a thousand rows it is several times faster than array
    parameters, whose dumping in Python (one ``re.sub`` per string) was an import's largest cost.
    """
    with session.connection().connection.driver_connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def plan_each_statement(session: Session) -> None:
    """PostgreSQL: plan every statement afresh for the rest of this transaction (a no-op elsewhere).

    psycopg prepares a statement after a few runs and PostgreSQL may then keep a generic plan
    made while the tables were small: a sequential scan that grows with every batch made a
    250,000-record import quadratic.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def make_engine(url: str) -> Engine:
    """Create an engine that behaves the same on SQLite and PostgreSQL."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # No pool_pre_ping: it costs a round trip per request on the signup hot path; stale
    # connections are recycled instead and a failed request rolls back cleanly.
    kwargs: dict = {"pool_recycle": 1800}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    # RQ forks a work horse per job: a child must never reuse the parent's sockets.
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's current transaction has committed.

    Jobs are enqueued this way, so a worker never sees an id the database has not
    stored yet, and a rolled-back request enqueues nothing.
    """
    session.info.setdefault("on_commit", []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    callbacks = session.info.pop("on_commit", [])
    for callback in callbacks:
        callback()


@event.listens_for(Session, "after_soft_rollback")
def _drop_on_commit(session: Session, _previous_transaction) -> None:
    session.info.pop("on_commit", None)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
