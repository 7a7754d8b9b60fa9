"""Shared fixtures: a real database (SQLite by default, PostgreSQL when NEZABYT_TEST_DATABASE_URL
points at one), migrated once per session and emptied after each test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from addon.config import Settings
from addon.db import make_engine, upgrade_database
from addon.models import Base
from addon.services import Services, build_services
from tests import network_guard

network_guard.install()  # before any fixture: no test may open a socket off this machine

TEST_SECRET = "test-secret-key"


def _test_database_url(tmp_path_factory) -> str:
    url = os.environ.get("NEZABYT_TEST_DATABASE_URL", "")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'nezabyt-test.sqlite3'}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    url = _test_database_url(tmp_path_factory)
    if not url.startswith("sqlite"):
        engine = make_engine(url)
        with engine.begin() as conn:  # a clean schema for this run
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    upgrade_database(url)
    return url


@pytest.fixture(scope="session", autouse=True)
def authorization_server():
    """Bitrix24's authorization server for the whole run (oauth.bitrix.info in production): a
    devportal whose /auth/ answers refreshes and app.info for every devportal of this process.
    The environment says where it is and that this is a test run (the development secret key and
    the local devportal's private address allowed), so the worker and web processes that tests
    start as subprocesses inherit it."""
    from devportal.server import DevPortalServer

    server = DevPortalServer(limits=False).start()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in testing_environment(server.oauth_url).items():
            patch.setenv(name, value)
        yield server
    server.stop()


def testing_environment(oauth_url: str) -> dict[str, str]:
    return {"NEZABYT_ENV": "test", "NEZABYT_ALLOW_PRIVATE_PORTALS": "1", "NEZABYT_OAUTH_URL": oauth_url}


@pytest.fixture
def settings(database_url, authorization_server) -> Settings:
    return Settings.from_env(env={"DATABASE_URL": database_url, "NEZABYT_SECRET_KEY": TEST_SECRET,
                                  "NEZABYT_CLIENT_ID": "local.nezabyt.test",
                                  "NEZABYT_CLIENT_SECRET": "test-client-secret",
                                  "NEZABYT_PUBLIC_URL": "http://127.0.0.1:8000",
                                  **testing_environment(authorization_server.oauth_url)})


@pytest.fixture
def services(settings) -> Services:
    svc = build_services(settings)
    yield svc
    empty_database(svc)
    svc.dispose()


def empty_database(svc: Services) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with svc.engine.begin() as conn:
        if svc.settings.is_sqlite:
            for name in tables:
                conn.execute(text(f'DELETE FROM "{name}"'))
        else:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in tables) + " RESTART IDENTITY CASCADE"))


@pytest.fixture
def session(services):
    with services.sessions() as s:
        yield s


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def app_server(services):
    """The Flask app on a free 127.0.0.1 port; `services.settings.public_url` becomes its URL."""
    from tests.support import AppServer

    server = AppServer(services).start()
    yield server
    server.stop()


@pytest.fixture
def devportal():
    """A local Bitrix24 portal (limits on, as in production) on a free 127.0.0.1 port."""
    server_module = pytest.importorskip("devportal.server")
    server = server_module.DevPortalServer()
    server.start()
    yield server
    server.stop()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by Playwright, one for the whole run (scripts/test
    installs the package; a missing browser fails the run, it never skips)."""
    import shutil

    if not shutil.which("chromium"):
        pytest.fail("chromium is missing: scripts/test installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
