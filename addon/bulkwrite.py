"""Writing many rows in few statements: loaded rows written back by column, new rows in one INSERT.
Core statements, no ORM flush; helpers here never commit."""
from __future__ import annotations

import json
from typing import Any, Iterable

from sqlalchemy import JSON, Text, any_, bindparam, cast, column, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session


def among(session: Session, column, values) -> Any:
    """`column IN values`, as ONE parameter on PostgreSQL (`= ANY(array)`): psycopg parses a
    statement's text on every run once it has over 50 parameters, which costs more CPU than the
    query; one array keeps the text short, parsed once and cached. Elsewhere a plain IN."""
    values = list(values)
    if _postgresql(session):
        return column == any_(bindparam(None, values, type_=ARRAY(column.type), unique=True))
    return column.in_(values)


def _postgresql(session: Session) -> bool:
    """Where values travel as arrays: `among`'s ids, and write_back's and insert_rows' columns."""
    return session.get_bind().dialect.name == "postgresql"


def _unnest(session: Session, columns, arrays):
    """`unnest(:a, :b, ...) AS given(v_a, v_b, ...)`: the arrays as rows, each typed by its column
    (psycopg is told `::DATE[]` and so on, so an array of NULLs keeps its type). A JSON column
    travels as TEXT[] of each value serialized as SQLAlchemy would (the engine's serializer; None
    is JSON null unless the column stores it as SQL NULL); `_given_value` casts it back."""
    params = []
    for c, array in zip(columns, arrays):
        if isinstance(c.type, JSON):
            dump = session.get_bind().dialect._json_serializer or json.dumps
            params.append(bindparam(None, [_json_text(c.type, v, dump) for v in array], type_=ARRAY(Text), unique=True))
        else:
            params.append(bindparam(None, array, type_=ARRAY(c.type), unique=True))
    return func.unnest(*params).table_valued(*(column(f"v_{c.name}") for c in columns)).render_derived(name="given")


def _json_text(type_: JSON, value, dump) -> str | None:
    if value is None or value is JSON.NULL:
        return None if (value is None and type_.none_as_null) else "null"
    return dump(value)


def _given_value(given, c):
    """The unnest column of `c`, cast back to JSON where it came as text."""
    v = given.c[f"v_{c.name}"]
    return cast(v, c.type) if isinstance(c.type, JSON) else v


def write_back(session: Session, model, rows: list, names: Iterable[str]) -> None:
    """Write the named columns of loaded rows back in few statements, and take the rows out of the
    session so no per-object flush repeats it (a unit-of-work flush of a chunk's objects costs more
    CPU than the UPDATE). Rows that end alike (a batch's "sent" marks) share one UPDATE ... WHERE
    id IN; rows that differ go in one UPDATE ... FROM unnest(arrays) on PostgreSQL, an executemany
    UPDATE by id elsewhere. The named columns must be all the caller changed on them."""
    if not rows:
        return
    names = tuple(names)
    table = model.__table__
    alike: dict[tuple, list[int]] = {}
    for r in rows:
        alike.setdefault(tuple(getattr(r, name) for name in names), []).append(r.id)
    for r in rows:
        if hasattr(r, "_sa_instance_state"):  # an ORM object (not a plain record such as outbox.PlannedWrite)
            session.expunge(r)
    if len(alike) * 4 <= len(rows):  # few endings (a quarter of the rows or less): one UPDATE each
        for values, ids in alike.items():
            session.execute(table.update().where(among(session, table.c.id, ids)).values(dict(zip(names, values))))
        return
    ordered = [(row_id, values) for values, ids in alike.items() for row_id in ids]
    if _postgresql(session):
        # One UPDATE ... FROM unnest(arrays): a parameter per column, not per row and column
        # (binding each row's values cost more CPU than the statement).
        arrays = [[row_id for row_id, _ in ordered]] + [[values[i] for _, values in ordered]
                                                        for i in range(len(names))]
        given = _unnest(session, [table.c.id, *(table.c[name] for name in names)], arrays)
        session.execute(table.update().where(table.c.id == given.c.v_id).values(
            {name: _given_value(given, table.c[name]) for name in names}))
        return
    statement = table.update().where(table.c.id == bindparam("row_id")).values(
        {name: bindparam(name) for name in names})
    session.execute(statement, [{"row_id": row_id, **dict(zip(names, values))} for row_id, values in ordered])


def insert_rows(session: Session, model, values: list[dict[str, Any]]) -> None:
    """Store many rows of `model` in one INSERT (Core: no ORM objects to flush): over arrays on
    PostgreSQL, an executemany elsewhere. The values carry every column the table's Python
    defaults would fill."""
    if not values:
        return
    table = model.__table__
    names = list(values[0])
    if len(values) > 1 and _postgresql(session) and all(v.keys() == values[0].keys() for v in values):
        # One INSERT ... SELECT FROM unnest(arrays): a parameter per column (see write_back).
        columns = [table.c[name] for name in names]
        given = _unnest(session, columns, [[v[name] for v in values] for name in names])
        session.execute(table.insert().from_select(names, select(*(_given_value(given, c) for c in columns))))
        return
    session.execute(table.insert(), values)
