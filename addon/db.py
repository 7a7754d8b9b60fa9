"""Engine and session construction; the edge (request, job) owns the session and commits."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


def pool_options(concurrency: int) -> dict:
    """The connection pool of a process running `concurrency` portals' work at once: each unit
    holds at most one session and, while it waits on the portal inside it, one more connection for
    the shared pace's statement (addon.bitrix.pace) or a token refresh. So pool_size >= concurrency
    (+2 for the scheduler's own queries) and an overflow of half again for the moments both are open;
    a process opens at most pool_size + max_overflow = 1.5 x concurrency + 2 connections, and
    PostgreSQL's max_connections must cover that per worker process, plus the web processes."""
    concurrency = max(int(concurrency), 1)
    return {"pool_size": concurrency + 2, "max_overflow": max(concurrency // 2, 5), "pool_timeout": 60}


def make_engine(url: str, *, pre_ping: bool = True, **kwargs) -> Engine:
    """The process's engine. On a server database every checkout pings it first (pre_ping), so a
    connection the server closed is replaced before use; the worker goes without (pre_ping=False):
    its units take a session for each short step, the ping was a fifth of its database round trips,
    and a unit that meets a closed connection fails as a whole — SQLAlchemy then drops the pool's
    connections, the unit's transactions roll back and the next pass does its work again."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL lets the web app write while the worker reads
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=pre_ping, **kwargs)


def make_intake_engine(engine: Engine) -> Engine:
    """The event receivers' engine: AUTOCOMMIT (each of their statements is atomic on its own, a
    transaction would only add BEGIN and COMMIT round trips) and, on a server database, a pool of its
    own without the pre-ping: the ping is one more round trip per event, a third of the database work
    of the hot path. A connection the server closed is met by the statement itself instead, and
    EventIntake runs it once more on a fresh one (DBAPIError.connection_invalidated), so a
    PostgreSQL restart costs no event. SQLite shares the app's engine (no server to lose)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_pre_ping=False)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def upgrade_database(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def alembic_config(url: str):
    from pathlib import Path

    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
