"""The doctor's checks of the deployment itself: the secret key, the public URL (and that it answers),
the database's migrations and the worker's heartbeat."""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable
from urllib.parse import urlsplit

import requests
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from addon.db import alembic_config
from addon.doctor.check import Check, as_utc
from addon.heartbeat import last_beat

MIN_SECRET_KEY_LENGTH = 32
# addon.config's stand-in when NEZABYT_SECRET_KEY is not set (development only).
DEVELOPMENT_SECRET_KEY = "nezabyt-development-secret-change-me"
HEARTBEAT_WITHIN = dt.timedelta(minutes=1)


def check_secret_key(settings) -> Check:
    key = getattr(settings, "secret_key", "") or ""
    name = "secret key"
    how = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
    if not key or key == DEVELOPMENT_SECRET_KEY:
        return Check(name, False, "NEZABYT_SECRET_KEY is not set: the public development key is in use",
                     f"set NEZABYT_SECRET_KEY to a new random key: {how}")
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return Check(name, False, f"{len(key)} characters, fewer than {MIN_SECRET_KEY_LENGTH}",
                     f"make a longer key ({how}) and switch to it with `nezabyt keys rotate` (docs/deploy.md)")
    previous = getattr(settings, "previous_secret_keys", ()) or ()
    extra = f"; {len(previous)} previous key(s) still accepted for reading" if previous else ""
    return Check(name, True, f"set, {len(key)} characters{extra}")


def check_public_url_https(settings) -> Check:
    url = getattr(settings, "public_url", "") or ""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return Check("public URL is https", False, url or "(not set)",
                     "put the app behind a TLS proxy and set NEZABYT_PUBLIC_URL=https://<your domain>")
    return Check("public URL is https", True, url)


def check_public_url_answers(settings, get: Callable[..., Any] = requests.get) -> Check:
    """GET <public URL>/healthz from here: catches DNS, proxy and certificate mistakes (a portal
    is outside, so this proves the way in only as far as this machine can tell)."""
    url = f"{(getattr(settings, 'public_url', '') or '').rstrip('/')}/healthz"
    name = "public URL answers"
    try:
        response = get(url, timeout=5)
        body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
    except requests.RequestException as exc:
        return Check(name, False, f"{url}: {type(exc).__name__} ({_reason(exc)})",
                     "check DNS, the proxy and its certificate, and that `web` is running")
    if response.status_code != 200 or body.get("status") != "ok":
        return Check(name, False, f"{url}: HTTP {response.status_code} {str(body or response.text)[:120]}",
                     "the proxy must pass requests to `web`; /healthz also fails when the database is down")
    return Check(name, True, f"{url}: ok")


def _reason(exc: Exception) -> str:
    """The innermost cause of a requests error, short (its own text nests every layer)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return str(exc)[:100]


def check_database(services) -> Check:
    name = "database migrated"
    url = services.engine.url.render_as_string(hide_password=True)
    try:
        with services.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # noqa: BLE001 — the check reports whatever stops the connection
        return Check(name, False, f"{url}: {type(exc).__name__}: {str(exc)[:160]}",
                     "check DATABASE_URL and that the database server is running")
    heads = set(ScriptDirectory.from_config(alembic_config(str(services.engine.url))).get_heads())
    if current != heads:
        return Check(name, False, f"{url} at {', '.join(sorted(current)) or 'no revision'}, "
                                  f"the code needs {', '.join(sorted(heads))}",
                     "run the release step: `nezabyt db upgrade`")
    return Check(name, True, f"{url} at {', '.join(sorted(heads))}")


def check_worker(services, now: dt.datetime) -> Check:
    name = "worker heartbeat"
    try:
        newest = last_beat(services)
    except Exception as exc:  # noqa: BLE001 — e.g. the table is missing before the migration
        return Check(name, False, f"{type(exc).__name__}: {str(exc)[:160]}",
                     "run `nezabyt db upgrade`, then start `nezabyt worker`")
    if newest is None:
        return Check(name, False, "no worker has ever reported",
                     "start the worker: `nezabyt worker` (one process or more)")
    worker_id, at = newest
    age = as_utc(now) - at
    if age > HEARTBEAT_WITHIN:
        return Check(name, False, f"last beat {int(age.total_seconds())} s ago from {worker_id}",
                     "the worker is down or stuck: check its log and restart `nezabyt worker`")
    return Check(name, True, f"{max(int(age.total_seconds()), 0)} s ago from {worker_id}")


def deployment_checks(services, now: dt.datetime, get: Callable[..., Any] = requests.get) -> list[Check]:
    settings = services.settings
    return [check_secret_key(settings), check_public_url_https(settings), check_public_url_answers(settings, get),
            check_database(services), check_worker(services, now)]
