"""The composition root: builds the engine, sessions and helpers from Settings, once per process."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from addon.config import Settings
from addon.crypto import TokenCipher
from addon.db import make_engine, make_intake_engine, make_session_factory, pool_options


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    cipher: TokenCipher
    _intake_engine: Engine | None = field(default=None, repr=False)

    @property
    def intake_engine(self) -> Engine:
        """The receivers' engine (see addon.db.make_intake_engine), built on first use."""
        if self._intake_engine is None:
            self._intake_engine = make_intake_engine(self.engine)
        return self._intake_engine

    def dispose(self) -> None:
        if self._intake_engine is not None and self._intake_engine.pool is not self.engine.pool:
            self._intake_engine.dispose()
        self.engine.dispose()


def build_services(settings: Settings | None = None, *, pre_ping: bool = True) -> Services:
    """The services of a process; the worker passes pre_ping=False (addon.db.make_engine says why)."""
    settings = settings or Settings.from_env()
    engine = make_engine(settings.database_url, pre_ping=pre_ping, **pool_options(settings.worker_concurrency))
    cipher = TokenCipher(settings.secret_key, settings.previous_secret_keys)
    sessions = make_session_factory(engine)
    # Sessions carry the cipher so the token store can encrypt with only a session in hand.
    sessions.configure(info={"nezabyt_cipher": cipher})
    return Services(settings=settings, engine=engine, sessions=sessions, cipher=cipher)


@contextmanager
def services_scope(settings: Settings | None = None, *, pre_ping: bool = True) -> Iterator[Services]:
    """Services for one command, disposed however it ends (no connection left open)."""
    services = build_services(settings, pre_ping=pre_ping)
    try:
        yield services
    finally:
        services.dispose()
