"""Keyset pagination: the page after (or before) a row, found by its sort key, never by OFFSET.

OFFSET reads and drops every row before the page, so page 2,000 of a long list costs 2,000 pages;
a keyset page starts at its cursor row's key in the index. The cursor is the id of the row a page
ends (or starts) with; its key is read back from the table, so a link carries nothing but an id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from sqlalchemy import ColumnElement, Select, select, tuple_
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    #: the next page starts after this id (None: this is the last page)
    after: int | None
    #: the previous page ends before this id (None: this is the first page)
    before: int | None


def fetch_page(
    session: Session,
    query: Select,
    keys: Sequence[ColumnElement],
    id_column: ColumnElement,
    *,
    after: int | None = None,
    before: int | None = None,
    size: int = 50,
    descending: bool = False,
    id_of: Callable[[Any], int] = attrgetter("id"),
) -> Page:
    """One page of ``query`` sorted by ``keys`` (the last one unique, e.g. the id) from a cursor row.

    ``keys`` must be an index's leading columns for the page to be read from the index. A cursor
    whose row is gone (deleted since the link was made) gives the first page.
    """
    cursor = before if before is not None else after
    bound = session.execute(select(*keys).where(id_column == cursor)).first() if cursor is not None else None
    backwards = bound is not None and before is not None
    down = descending != backwards  # a previous page is read in the opposite order, then turned round
    paged = query
    if bound is not None:
        key, value = (tuple_(*keys), tuple_(*bound)) if len(keys) > 1 else (keys[0], bound[0])
        paged = query.where(key < value if down else key > value)
    ordered = paged.order_by(*(k.desc() if down else k.asc() for k in keys)).limit(size + 1)
    rows = list(session.execute(ordered).all())
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        if not rows:  # nothing before it any more: the first page
            return fetch_page(session, query, keys, id_column, size=size, descending=descending, id_of=id_of)
        rows.reverse()
        has_next, has_previous = True, more
    else:
        has_next, has_previous = more, bound is not None
    return Page(
        rows=rows,
        after=id_of(rows[-1]) if rows and has_next else None,
        before=id_of(rows[0]) if rows and has_previous else None,
    )
