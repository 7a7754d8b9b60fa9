"""The public development secret key never runs a deployment: production refuses to start without a
key of its own (or with a short one); the demo, the devportal and the tests say they are not production."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from addon.config import BITRIX24_OAUTH_URL, DEVELOPMENT_SECRET, ConfigError, Settings

GOOD_KEY = "k" * 32


def production(**env):
    return {"DATABASE_URL": "sqlite://", **env}


def test_production_is_the_default_and_refuses_a_missing_key_saying_how_to_make_one():
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(production())
    assert "NEZABYT_SECRET_KEY" in str(refused.value)
    assert 'python -c "import secrets; print(secrets.token_urlsafe(48))"' in str(refused.value)


@pytest.mark.parametrize("key", ["short", "x" * 31, DEVELOPMENT_SECRET])
def test_production_refuses_a_short_or_the_public_key(key):
    with pytest.raises(ConfigError):
        Settings.from_env(production(NEZABYT_SECRET_KEY=key))


def test_production_takes_a_long_enough_key_and_bitrix24s_authorization_server():
    settings = Settings.from_env(production(NEZABYT_SECRET_KEY=GOOD_KEY))
    assert settings.secret_key == GOOD_KEY and settings.is_production
    assert settings.oauth_url == BITRIX24_OAUTH_URL == "https://oauth.bitrix.info/"
    assert settings.allow_private_portals is False


@pytest.mark.parametrize("environment", ["development", "test", "Development "])
def test_the_development_key_only_where_the_run_says_it_is_not_production(environment):
    settings = Settings.from_env(production(NEZABYT_ENV=environment))
    assert settings.secret_key == DEVELOPMENT_SECRET and not settings.is_production


def test_an_unknown_environment_is_refused_not_guessed():
    with pytest.raises(ConfigError):
        Settings.from_env(production(NEZABYT_ENV="prod", NEZABYT_SECRET_KEY=GOOD_KEY))


def test_overrides_are_checked_too():
    with pytest.raises(ConfigError):
        Settings.from_env(production(NEZABYT_SECRET_KEY=GOOD_KEY), secret_key="short")
    assert Settings.from_env(production(), environment="development").secret_key == DEVELOPMENT_SECRET


def test_the_authorization_server_is_https_in_production():
    with pytest.raises(ConfigError):
        Settings.from_env(production(NEZABYT_SECRET_KEY=GOOD_KEY, NEZABYT_OAUTH_URL="http://oauth.example.test/"))
    local = Settings.from_env(production(NEZABYT_ENV="test", NEZABYT_OAUTH_URL="http://127.0.0.1:9/auth"))
    assert local.oauth_url == "http://127.0.0.1:9/auth/"


def _bare_environment(tmp_path, **extra) -> dict:
    """A process environment with none of the app's variables (as a fresh deployment has)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEZABYT_") and k != "DATABASE_URL"}
    return {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite3'}", "HOME": str(tmp_path), **extra}


def test_gunicorns_app_factory_refuses_to_start_without_a_key(tmp_path):
    done = subprocess.run([sys.executable, "-c", "from addon.web import create_app; create_app()"],
                          env=_bare_environment(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ConfigError" in done.stderr and "secrets.token_urlsafe(48)" in done.stderr


def test_the_worker_refuses_to_start_without_a_key_with_a_message_not_a_traceback(tmp_path):
    nezabyt = os.path.join(os.path.dirname(sys.executable), "nezabyt")
    done = subprocess.run([nezabyt, "worker", "--once"], env=_bare_environment(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: NEZABYT_SECRET_KEY is not set") and "Traceback" not in done.stderr
    short = subprocess.run([nezabyt, "worker", "--once"], env=_bare_environment(tmp_path, NEZABYT_SECRET_KEY="abc"),
                           capture_output=True, text=True, timeout=60)
    assert short.returncode == 1 and "at least 32" in short.stderr
