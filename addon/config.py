"""Settings read from the environment: the one place that knows the environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

# Where the add-on runs. The development default secret key is accepted only outside production:
# the demo, the devportal and the tests say so explicitly, a deployment (gunicorn, `nezabyt worker`)
# that says nothing is production.
PRODUCTION, DEVELOPMENT, TEST = "production", "development", "test"
ENVIRONMENTS = (PRODUCTION, DEVELOPMENT, TEST)
DEVELOPMENT_SECRET = "nezabyt-development-secret-change-me"
MIN_SECRET_LENGTH = 32
# Bitrix24's own authorization server: every portal's tokens are refreshed there, nowhere else.
BITRIX24_OAUTH_URL = "https://oauth.bitrix.info/"
MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'


class ConfigError(Exception):
    """The environment does not make a safe configuration (the message says how to fix it)."""


def default_database_url() -> str:
    """A SQLite file in the per-user data folder (created on first use)."""
    from platformdirs import user_data_dir

    folder = Path(user_data_dir("nezabyt", appauthor=False))
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'nezabyt.sqlite3'}"


@dataclass(frozen=True)
class Settings:
    database_url: str
    secret_key: str
    client_id: str = ""
    client_secret: str = ""
    public_url: str = "http://127.0.0.1:8000"
    # The pace the add-on allows itself per portal: the portal's own leaky bucket (2/s, 50 deep)
    # less the smallest margin. The rate stays at 2.0: the client's token bucket and the portal's
    # drain the same way, and a lower rate costs 10% of every long run for nothing, since in steady
    # state the portal's bucket only holds what the burst put in it. The margin is in the depth: 2
    # requests (1 s at 2/s) absorb what separates our clock from the portal's — a request's
    # transit time varying by up to a second, clock-rate drift (ppm: well under a request per
    # run) — and a stray call of another job. Measured against the devportal (same algorithm,
    # same machine): no 503 over a 10,000-write run. Should a real portal still answer 503, the
    # client backs off and retries (addon.bitrix.rest.MAX_503_RETRIES).
    portal_rps: float = 2.0
    portal_burst: int = 48
    # How many passes a planned write or message may be refused on its own for a passing reason
    # (a 5xx of that command, say) before it is marked failed, so it never holds up the others.
    send_attempts: int = 12
    worker_id: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")
    max_event_body: int = 64 * 1024
    # --- security: where the app may send its secret and its requests ---
    environment: str = PRODUCTION
    # The only place token refreshes (with the client secret) and install proofs go.
    oauth_url: str = BITRIX24_OAUTH_URL
    # Installs from portals on private, loopback or link-local addresses, and over plain http:
    # only for the local devportal (demo, tests).
    allow_private_portals: bool = False
    # Bulk load (addon.bulkload.files.ImportLimits): a file past one is refused whole, the limit named in
    # the error. 200,000 rows are twice the largest load measured (bench/bulkload.py); a .xlsx that
    # holds them unpacks to about 60 MB; a CSV of them is well under the upload cap.
    max_upload_bytes: int = 10 * 1024 * 1024
    max_import_rows: int = 200_000
    max_xlsx_unpacked_bytes: int = 100 * 1024 * 1024
    # Keys tokens at rest may still be encrypted with during a key rotation (decrypt only).
    previous_secret_keys: tuple[str, ...] = ()
    # Portals a worker process serves side by side (worker/pool.py): their work is almost all
    # waiting on the portals (each paced to its own 2 requests/s), so many threads cost little CPU.
    # The database pool is sized from it (addon.db.pool_options).
    worker_concurrency: int = 32
    # A worker's claim on a portal lasts this long unless renewed (between chunks of its work); a
    # worker that dies leaves its portals to the others after at most this.
    lease_seconds: int = 300

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        """Settings from the environment (and explicit overrides); raises ConfigError when they
        are not safe for where the add-on runs (see `checked`)."""
        env = dict(os.environ if env is None else env)
        settings = cls(
            database_url=env.get("DATABASE_URL") or default_database_url(),
            secret_key=env.get("NEZABYT_SECRET_KEY", ""),
            client_id=env.get("NEZABYT_CLIENT_ID", ""),
            client_secret=env.get("NEZABYT_CLIENT_SECRET", ""),
            public_url=env.get("NEZABYT_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
            portal_rps=float(env.get("NEZABYT_PORTAL_RPS", str(cls.portal_rps))),
            portal_burst=int(env.get("NEZABYT_PORTAL_BURST", str(cls.portal_burst))),
            send_attempts=max(1, int(env.get("NEZABYT_SEND_ATTEMPTS", str(cls.send_attempts)))),
            environment=(env.get("NEZABYT_ENV") or PRODUCTION).strip().lower(),
            oauth_url=env.get("NEZABYT_OAUTH_URL") or BITRIX24_OAUTH_URL,
            allow_private_portals=_flag(env.get("NEZABYT_ALLOW_PRIVATE_PORTALS")),
            **_import_limits_from_env(cls, env),
            previous_secret_keys=tuple(k.strip() for k in env.get("NEZABYT_SECRET_KEY_PREVIOUS", "").split(",")
                                       if k.strip()),
            worker_concurrency=max(1, int(env.get("NEZABYT_WORKER_CONCURRENCY", str(cls.worker_concurrency)))),
            lease_seconds=max(5, int(env.get("NEZABYT_LEASE_SECONDS", str(cls.lease_seconds)))),
        )
        return checked(replace(settings, **overrides) if overrides else settings)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_production(self) -> bool:
        return self.environment == PRODUCTION

    def security_environment(self) -> dict[str, str]:
        """These security settings as environment variables, for a child process of the same run
        (the demo's web app, a benchmark's worker)."""
        return {"NEZABYT_ENV": self.environment, "NEZABYT_OAUTH_URL": self.oauth_url,
                "NEZABYT_ALLOW_PRIVATE_PORTALS": "1" if self.allow_private_portals else "0"}


def checked(settings: Settings) -> Settings:
    """The settings with the development defaults filled in where they are allowed; ConfigError
    where they are not: production needs its own secret key (with the public default anyone could
    forge an admin's page token and decrypt every stored portal token) of at least 32 characters."""
    if settings.environment not in ENVIRONMENTS:
        raise ConfigError(f"NEZABYT_ENV={settings.environment!r}: use one of {', '.join(ENVIRONMENTS)}")
    secret = settings.secret_key
    if settings.is_production:
        if not secret or secret == DEVELOPMENT_SECRET:
            raise ConfigError("NEZABYT_SECRET_KEY is not set: production needs its own secret key. Make one with\n"
                              f"    {MAKE_A_KEY}\nand set it in the environment of the web and worker processes "
                              "(the same key for both; NEZABYT_ENV=development runs with a public development key).")
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(f"NEZABYT_SECRET_KEY is {len(secret)} characters long: production needs at least "
                              f"{MIN_SECRET_LENGTH}. Make one with\n    {MAKE_A_KEY}")
    elif not secret:
        secret = DEVELOPMENT_SECRET  # keeps the quick start to one command
    oauth_url = settings.oauth_url.rstrip("/") + "/"
    if not oauth_url.startswith(("https://", "http://")):
        raise ConfigError(f"NEZABYT_OAUTH_URL={settings.oauth_url!r} is not an http(s) URL")
    # Plain http only beside NEZABYT_ALLOW_PRIVATE_PORTALS: the local devportal's authorization server.
    if settings.is_production and not settings.allow_private_portals and not oauth_url.startswith("https://"):
        raise ConfigError("NEZABYT_OAUTH_URL must be https in production (Bitrix24's is https://oauth.bitrix.info/)")
    return replace(settings, secret_key=secret, oauth_url=oauth_url)


def _flag(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def _import_limits_from_env(cls, env: dict[str, str]) -> dict[str, int]:
    """NEZABYT_MAX_UPLOAD_MB, NEZABYT_MAX_IMPORT_ROWS, NEZABYT_MAX_XLSX_UNPACKED_MB."""
    mb = 1024 * 1024
    return {
        "max_upload_bytes": int(float(env.get("NEZABYT_MAX_UPLOAD_MB", cls.max_upload_bytes / mb)) * mb),
        "max_import_rows": int(env.get("NEZABYT_MAX_IMPORT_ROWS", cls.max_import_rows)),
        "max_xlsx_unpacked_bytes": int(float(env.get("NEZABYT_MAX_XLSX_UNPACKED_MB",
                                                     cls.max_xlsx_unpacked_bytes / mb)) * mb),
    }
