"""What a demo run is asked for (DemoConfig) and what it found (DemoResult), with the demo's fixed
choices: the portal's time zone, the base's starting statuses and the devportal's raised limit."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

TZ_NAME = "Europe/Moscow"
# Statuses of the base before the app came, by share (seed 003: most clients carry one; some none).
START_MIX = (("NEW", 0.03), ("HOT", 0.2), ("WARM", 0.25), ("COLD", 0.3), ("LOST", 0.05), (None, 0.17))
# The devportal's limit during the demo: far above the real 2/s so a month fits in two minutes.
DEMO_RPS, DEMO_BURST = 2000.0, 2000


@dataclass(frozen=True)
class DemoConfig:
    contacts: int = 12000
    companies: int = 2000
    departments: int = 3
    managers: int = 12
    days: int = 30
    seed: int = 1
    database_url: str | None = None  # None: a fresh SQLite file in a temporary folder
    calls_per_manager: int = 14  # calls a manager makes on an ordinary day, warned clients first
    forget_share: float = 0.3  # share of the warned clients a manager forgets to call
    changes_per_day: int = 20  # manual status changes a day across the company
    changes_without_call: float = 0.3  # share of them made without a call (Nezabyt reverts them)
    deals_per_day: int = 8  # new deals a day; about as many are closed
    new_clients_per_day: int = 6
    calls_per_client: float = 0.3  # the seeded six months of call history, per client
    last_day: dt.date | None = None  # the month's last day (None: today in the portal's time zone)


@dataclass
class DemoResult:
    """The figures the summary prints (read back from the database and the devportal's call log)."""

    database_url: str
    portal_id: int
    devportal_url: str
    app_url: str
    first_day: dt.date
    last_day: dt.date
    tracked_at_start: int = 0
    tracked_at_end: int = 0
    transitions: dict[str, int] = field(default_factory=dict)  # "FROM→TO" -> count
    by_cause: dict[str, int] = field(default_factory=dict)
    status_mix: dict[str, int] = field(default_factory=dict)  # current statuses at the end
    status_mix_at_start: dict[str, int] = field(default_factory=dict)
    status_mix_by_day: list[dict[str, int]] = field(default_factory=list)
    reverts: int = 0
    losses: int = 0
    transfers: int = 0
    digests_sent: int = 0
    messages_sent: int = 0
    notifications_in_portal: int = 0
    timeline_comments: int = 0
    feed_posts: int = 0
    rest_http_requests: int = 0
    rest_commands: int = 0
    rest_by_method: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)  # what the simulated managers did
    events_stored: int = 0
    events_processed: int = 0
    seconds: float = 0.0
