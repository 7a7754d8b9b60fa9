"""Writing many rows in few statements: loaded rows written back by column, new rows in one INSERT.
Core statements, no ORM flush; helpers here never commit."""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import JSON, any_, bindparam, column, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session


def among(session: Session, column, values) -> Any:
    """`column IN values`, as ONE parameter on PostgreSQL (`= ANY(array)`): psycopg parses a
    statement's text on every run once it has over 50 parameters, which costs more CPU than the
    query; one array keeps the text short, parsed once and cached. Elsewhere a plain IN."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type), unique=True))
    return column.in_(values)


def _arrays_fit(session: Session, table, names) -> bool:
    """PostgreSQL, and no JSON column among `names`: the rows can travel as one array a column."""
    return session.get_bind().dialect.name == "postgresql" and not any(
        isinstance(table.c[name].type, JSON) for name in names)


def _unnest(columns, arrays):
    """`unnest(:a, :b, ...) AS given(v_a, v_b, ...)`: the arrays as rows, each typed by its column
    (psycopg is told `::DATE[]` and so on, so an array of NULLs keeps its type)."""
    return func.unnest(*(bindparam(None, array, type_=ARRAY(c.type), unique=True)
                         for c, array in zip(columns, arrays))).table_valued(
        *(column(f"v_{c.name}") for c in columns)).render_derived(name="given")


def write_back(session: Session, model, rows: list, names: Iterable[str]) -> None:
    """Write the named columns of loaded rows back in few statements, and take the rows out of the
    session so no per-object flush repeats it (a unit-of-work flush of a chunk's objects costs more
    CPU than the UPDATE). Rows that end alike (a batch's "sent" marks) share one UPDATE ... WHERE
    id IN; rows that differ go in one executemany UPDATE by id. The named columns must be all the
    caller changed on them."""
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
    if _arrays_fit(session, table, names):
        # One UPDATE ... FROM unnest(arrays): a parameter per column, not per row and column
        # (binding each row's values cost more CPU than the statement).
        arrays = [[row_id for row_id, _ in ordered]] + [[values[i] for _, values in ordered]
                                                        for i in range(len(names))]
        given = _unnest([table.c.id, *(table.c[name] for name in names)], arrays)
        session.execute(table.update().where(table.c.id == given.c.v_id).values(
            {name: given.c[f"v_{name}"] for name in names}))
        return
    statement = table.update().where(table.c.id == bindparam("row_id")).values(
        {name: bindparam(name) for name in names})
    session.execute(statement, [{"row_id": row_id, **dict(zip(names, values))} for row_id, values in ordered])


def insert_rows(session: Session, model, values: list[dict[str, Any]]) -> None:
    """Store many rows of `model` in one executemany INSERT (Core: no ORM objects to flush). The
    values carry every column the table's Python defaults would fill."""
    if not values:
        return
    table = model.__table__
    names = list(values[0])
    if len(values) > 1 and _arrays_fit(session, table, names) and all(v.keys() == values[0].keys() for v in values):
        # One INSERT ... SELECT FROM unnest(arrays): a parameter per column (see write_back).
        given = _unnest([table.c[name] for name in names], [[v[name] for v in values] for name in names])
        session.execute(table.insert().from_select(names, select(*given.c)))
        return
    session.execute(table.insert(), values)
