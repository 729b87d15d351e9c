"""SQL helpers for writing many rows at once, on PostgreSQL and SQLite alike.

Registration (:mod:`transcriber.ingest.registration`) and the facility and sensor lookups
(:mod:`transcriber.codes`) write and look up rows in batches; these are the pieces they
share: IN lists cut to a size both databases take, one INSERT for many rows, the dialect's
``ON CONFLICT`` insert, and custom plans for PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import JSON, Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from transcriber.schema import Base

_T = TypeVar("_T")

# Values per IN (...) list: well below SQLite's limit of 32,766 parameters per statement.
IN_LIST_MAX = 500


def custom_plans(session: Session) -> None:
    """Have PostgreSQL plan this transaction's lookups for the values they are run with.

    psycopg prepares a statement once it has run five times, and PostgreSQL may then reuse
    one generic plan for it. For ``key IN (500 parameters)`` on a table whose statistics
    are stale (one a first scan is filling, or with autovacuum off) that plan compared every
    row of the bucket with every key one by one: a lookup of 500 keys grew from 5 ms to
    200 ms at 6,000 rows, and on with the table. Planning each run costs well under 1 ms.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def table_of(model: type[Base]) -> Table:
    # Core inserts with column names as keys skip the ORM's per-row attribute translation.
    return Base.metadata.tables[model.__tablename__]


def chunks(items: Sequence[_T], size: int = IN_LIST_MAX) -> Iterator[Sequence[_T]]:
    for first in range(0, len(items), size):
        yield items[first : first + size]


def insert_many(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    returning: Sequence[str],
    unique: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (all with the same columns) in the order given, leaving out those
    that would repeat a row on the columns ``unique``; returns the columns ``returning`` of
    the rows inserted.

    On PostgreSQL in one statement whose values are one array per column, unnested: its
    text is the same whatever the number of rows. SQLAlchemy's multi-row INSERT
    ("insertmanyvalues") writes 500 rows as 6,500 placeholders, which psycopg parses
    afresh every time (it caches only short statements): a third of the time of a scan's
    registration went there. SQLite gets the multi-row INSERT.
    """
    if session.get_bind().dialect.name != "postgresql":
        statement = upsert(session)(table)
        if unique:
            statement = statement.on_conflict_do_nothing(index_elements=list(unique))
        result = session.execute(statement.returning(*(table.c[c] for c in returning)), rows)
        return [tuple(row) for row in result]
    columns = list(rows[0])
    dialect = session.get_bind().dialect
    arrays: dict[str, list[Any]] = {}
    casts: list[str] = []
    for index, name in enumerate(columns):
        column = table.c[name]
        values = [row[name] for row in rows]
        if isinstance(column.type, JSON):
            values = [None if v is None else json.dumps(v) for v in values]
        arrays[f"c{index}"] = values
        casts.append(f"CAST(:c{index} AS {column.type.compile(dialect=dialect)}[])")
    names = ", ".join(columns)
    conflict = f" ON CONFLICT ({', '.join(unique)}) DO NOTHING" if unique else ""
    statement = text(
        f"INSERT INTO {table.name} ({names}) "
        f"SELECT {names} FROM unnest({', '.join(casts)}) WITH ORDINALITY "
        f"AS given({names}, position) ORDER BY position{conflict} "
        f"RETURNING {', '.join(returning)}"
    )
    return [tuple(row) for row in session.execute(statement, arrays)]


def upsert(session: Session) -> Any:
    """The dialect's INSERT with ``ON CONFLICT`` (PostgreSQL and SQLite spell it the same)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


# --- Scan ---------------------------------------------------------------------------------
