"""Storage: migrations agree with the models, one head, tokens never stored in clear."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, select

from addon.db import alembic_config
from addon.bulkwrite import among, write_back
from addon.models import Base, Portal, TrackedEntity
from tests.factories import make_portal, make_tracked


def test_models_and_migrations_agree(services):
    with services.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


def test_exactly_one_head(database_url):
    script = ScriptDirectory.from_config(alembic_config(database_url))
    assert len(script.get_heads()) == 1


def test_tokens_are_encrypted_at_rest(services):
    access, refresh = "ACCESS-abcdef0123456789", "REFRESH-0123456789abcdef"
    with services.sessions.begin() as s:
        make_portal(s, access_token_enc=services.cipher.encrypt(access),
                    refresh_token_enc=services.cipher.encrypt(refresh),
                    application_token_enc=services.cipher.encrypt("APPTOKEN-xyz"))
    with services.sessions() as s:
        p = s.scalars(select(Portal)).one()
        assert services.cipher.decrypt(p.access_token_enc) == access
        assert services.cipher.decrypt(p.refresh_token_enc) == refresh
    if services.settings.is_sqlite:
        path = Path(services.engine.url.database)
        raw = path.read_bytes() + (Path(str(path) + "-wal").read_bytes() if Path(str(path) + "-wal").exists() else b"")
        assert access.encode() not in raw and refresh.encode() not in raw
        assert b"APPTOKEN-xyz" not in raw
    else:
        with services.engine.connect() as conn:
            dump = " ".join(str(r) for r in conn.exec_driver_sql("SELECT * FROM portal").all())
        assert access not in dump and refresh not in dump


def test_due_today_uses_the_index(services):
    with services.sessions.begin() as s:
        p = make_portal(s)
        for i in range(50):
            make_tracked(s, p.id, i, "NEW", due_on=dt.date(2026, 1, 1) + dt.timedelta(days=i))
    with services.engine.connect() as conn:
        if services.settings.is_sqlite:
            plan = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id FROM tracked_entity WHERE portal_id = 1 AND due_on <= '2026-01-05'"
            ).all()
            assert any("ix_tracked_entity_due" in str(row) for row in plan), plan
        else:
            conn.exec_driver_sql("ANALYZE tracked_entity")
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = conn.exec_driver_sql(
                "EXPLAIN SELECT id FROM tracked_entity WHERE portal_id = 1 AND due_on <= '2026-01-05'").all()
            assert any("ix_tracked_entity_due" in str(row) for row in plan), plan


def test_write_back_stores_alike_and_different_rows_and_leaves_the_session(services):
    """bulkwrite.write_back: rows that end alike share one UPDATE, rows that differ go by id; either
    way every row gets its values (and its updated_at), and the objects leave the session."""
    day = dt.date(2026, 3, 2)
    with services.sessions.begin() as s:
        portal = make_portal(s)
        for i in range(1, 13):
            make_tracked(s, portal.id, i, status="active")
    with services.sessions() as s:
        rows = s.scalars(select(TrackedEntity).order_by(TrackedEntity.entity_id)).all()
        stamps = {r.id: r.updated_at for r in rows}
        for r in rows:  # all alike: the grouped path
            r.status, r.due_on = "cooling", day
        write_back(s, TrackedEntity, rows, ("status", "due_on"))
        assert all(r not in s for r in rows)
        s.commit()
        rows = s.scalars(select(TrackedEntity).order_by(TrackedEntity.entity_id)).all()
        assert {(r.status, r.due_on) for r in rows} == {("cooling", day)}
        for r in rows:  # each different: the executemany path
            r.due_on = day + dt.timedelta(days=r.entity_id)
        write_back(s, TrackedEntity, rows, ("status", "due_on"))
        s.commit()
    with services.sessions() as s:
        rows = s.scalars(select(TrackedEntity).order_by(TrackedEntity.entity_id)).all()
        assert [r.due_on for r in rows] == [day + dt.timedelta(days=i) for i in range(1, 13)]
        assert all(r.status == "cooling" and r.updated_at >= stamps[r.id] for r in rows)


def test_among_matches_what_in_matches_with_one_parameter_on_postgresql(services):
    """bulkwrite.among: the rows of IN, any count of values; on PostgreSQL the statement carries
    one array parameter (a short text the driver parses once), elsewhere a plain IN."""
    with services.sessions.begin() as s:
        portal = make_portal(s)
        for i in range(1, 131):
            make_tracked(s, portal.id, i, status="active")
    wanted = list(range(2, 131, 2))
    with services.sessions() as s:
        by_in = s.scalars(select(TrackedEntity.entity_id).where(TrackedEntity.entity_id.in_(wanted))).all()
        clause = among(s, TrackedEntity.entity_id, wanted)
        by_among = s.scalars(select(TrackedEntity.entity_id).where(clause)).all()
        assert sorted(by_among) == sorted(by_in) == wanted
        assert s.scalars(select(TrackedEntity.entity_id).where(among(s, TrackedEntity.entity_id, []))).all() == []
        compiled = select(TrackedEntity.id).where(clause).compile(s.get_bind())
        if services.settings.is_sqlite:
            assert "IN" in str(compiled)
        else:
            assert "ANY" in str(compiled) and len(compiled.params) == 1


def test_write_back_of_differing_rows_keeps_nulls_times_and_untouched_columns(services):
    """The by-row path (on PostgreSQL one UPDATE over arrays): a column all NULL, timestamps and
    numbers arrive as given; columns not named stay as they were."""
    day, when = dt.date(2026, 3, 2), dt.datetime(2026, 3, 2, 9, 30, 15)
    with services.sessions.begin() as s:
        portal = make_portal(s)
        for i in range(1, 8):
            make_tracked(s, portal.id, i, status="active", title=f"client {i}")
    with services.sessions() as s:
        rows = s.scalars(select(TrackedEntity).order_by(TrackedEntity.entity_id)).all()
        for r in rows:
            r.due_on, r.previous_status = day + dt.timedelta(days=r.entity_id), None
            r.written_at, r.open_deals = when + dt.timedelta(seconds=r.entity_id), r.entity_id
        write_back(s, TrackedEntity, rows, ("due_on", "previous_status", "written_at", "open_deals"))
        s.commit()
    with services.sessions() as s:
        got = [(r.due_on, r.previous_status, r.written_at, r.open_deals, r.title, r.status)
               for r in s.scalars(select(TrackedEntity).order_by(TrackedEntity.entity_id))]
    assert got == [(day + dt.timedelta(days=i), None, when + dt.timedelta(seconds=i), i, f"client {i}", "active")
                   for i in range(1, 8)]


def test_insert_rows_stores_every_row_as_given_in_order_with_the_tables_defaults(services):
    """bulkwrite.insert_rows (on PostgreSQL one INSERT ... SELECT over arrays): every row, NULLs
    kept, ids in the order given, and a column left out takes its Python default."""
    from addon.bulkwrite import insert_rows
    from addon.models import StatusHistory

    with services.sessions.begin() as s:
        portal_id = make_portal(s).id
    day = dt.date(2026, 3, 2)
    values = [{"portal_id": portal_id, "entity_type": "contact", "entity_id": i, "from_status": None if i % 2 else "HOT",
               "to_status": "WARM", "changed_on": day - dt.timedelta(days=i), "cause": "decay", "by_user_id": None,
               "assigned_by_id": i, "note": None} for i in range(1, 9)]
    with services.sessions() as s:
        insert_rows(s, StatusHistory, values)
        s.commit()
    with services.sessions() as s:
        got = s.scalars(select(StatusHistory).order_by(StatusHistory.id)).all()
    assert [(r.entity_id, r.from_status, r.changed_on, r.assigned_by_id, r.note) for r in got] == [
        (v["entity_id"], v["from_status"], v["changed_on"], v["assigned_by_id"], None) for v in values]
    assert all(r.recorded_at is not None for r in got)


def test_insert_rows_keeps_json_columns_as_given(services):
    """JSON columns travel through the arrays too (on PostgreSQL as text, cast back): dicts with
    nesting, NULLs and non-ASCII text, and an empty dict, each in its row."""
    from addon.bulkwrite import insert_rows
    from addon.models import Outbox

    with services.sessions.begin() as s:
        portal_id = make_portal(s).id
    params = [{"id": i, "fields": {"UF_STATUS": "Тёплый", "list": [i, None, True]}} for i in range(1, 7)] + [{}]
    values = [{"portal_id": portal_id, "key": f"k{i}", "method": "crm.contact.update", "params": p,
               "status": "pending", "job_run_id": None, "created_at": dt.datetime(2026, 3, 2, 9, 0),
               "attempts": 0} for i, p in enumerate(params)]
    inserts = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO outbox"):
            inserts.append(executemany)

    event.listen(services.engine, "before_cursor_execute", seen)
    try:
        with services.sessions() as s:
            insert_rows(s, Outbox, values)
            s.commit()
    finally:
        event.remove(services.engine, "before_cursor_execute", seen)
    # One statement: an executemany on SQLite, one INSERT over arrays on PostgreSQL.
    assert inserts == ([True] if services.settings.is_sqlite else [False])
    with services.sessions() as s:
        rows = s.scalars(select(Outbox).order_by(Outbox.id)).all()
        assert [(r.key, r.params) for r in rows] == [(v["key"], v["params"]) for v in values]
