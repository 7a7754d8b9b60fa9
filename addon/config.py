"""Settings read from the environment: the one place that knows the environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


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
    # client backs off and retries (portal_client.MAX_503_RETRIES).
    portal_rps: float = 2.0
    portal_burst: int = 48
    worker_id: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")
    max_event_body: int = 64 * 1024
    # Portals a worker process serves side by side (worker/pool.py): their work is almost all
    # waiting on the portals (each paced to its own 2 requests/s), so many threads cost little CPU.
    # The database pool is sized from it (addon.db.pool_options).
    worker_concurrency: int = 32
    # A worker's claim on a portal lasts this long unless renewed (between chunks of its work); a
    # worker that dies leaves its portals to the others after at most this.
    lease_seconds: int = 300

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        env = dict(os.environ if env is None else env)
        secret = env.get("NEZABYT_SECRET_KEY", "")
        if not secret:
            # A development default keeps the quick start to one command; production sets its own.
            secret = "nezabyt-development-secret-change-me"
        settings = cls(
            database_url=env.get("DATABASE_URL") or default_database_url(),
            secret_key=secret,
            client_id=env.get("NEZABYT_CLIENT_ID", ""),
            client_secret=env.get("NEZABYT_CLIENT_SECRET", ""),
            public_url=env.get("NEZABYT_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
            portal_rps=float(env.get("NEZABYT_PORTAL_RPS", str(cls.portal_rps))),
            portal_burst=int(env.get("NEZABYT_PORTAL_BURST", str(cls.portal_burst))),
            worker_concurrency=max(1, int(env.get("NEZABYT_WORKER_CONCURRENCY", str(cls.worker_concurrency)))),
            lease_seconds=max(5, int(env.get("NEZABYT_LEASE_SECONDS", str(cls.lease_seconds)))),
        )
        return replace(settings, **overrides) if overrides else settings

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
