"""The portal's limits and faults: the request-rate leaky bucket, the operating-time window,
the plan, and the injected failures (failing requests, method errors, a blocked portal)."""
from __future__ import annotations

from collections import deque

from devportal.errors import FAULT_STATUS, RestError

OPERATING_WINDOW = 600.0  # seconds: Bitrix24 sums method time over ten 1-minute buckets


class LimitsMixin:
    """DevPortal's limits and injected faults."""

    def set_limits(self, rps: float | None = None, burst: int | None = None, enabled: bool | None = None,
                   operating_limit: float | None = None) -> None:
        with self.lock:
            if rps is not None:
                self.rps = float(rps)
            if burst is not None:
                self.burst = int(burst)
            if enabled is not None:
                self.limits_enabled = bool(enabled)
            if operating_limit is not None:
                self.operating_limit = float(operating_limit)
            self._bucket_level = 0.0
            self._bucket_at = None

    def set_plan(self, license: str) -> dict:
        """Put the portal on a plan (app.info LICENSE, e.g. "ru_ent250" or "ru_std") with that plan's
        request-rate limits from Bitrix24's limits page: Enterprise 5/s and 250, the others 2/s and 50."""
        enterprise = license.split("_", 1)[-1].lower().startswith("ent")
        with self.lock:
            self.license = license
        self.set_limits(rps=5.0 if enterprise else 2.0, burst=250 if enterprise else 50)
        return {"license": license, "rps": self.rps, "burst": self.burst}

    def set_method_cost(self, method: str, seconds: float | None) -> None:
        """Make each call of `method` count `seconds` of operating time (None: its real time)."""
        with self.lock:
            if seconds is None:
                self.method_cost.pop(method.lower(), None)
            else:
                self.method_cost[method.lower()] = float(seconds)

    def set_faults(self, drop_events: float = 0.0, fail_next: int = 0, fail_status: int = 503,
                   latency_ms: int = 0, method_errors: dict[str, str] | None = None,
                   portal_error: str | None = None) -> None:
        """Injected faults; a call without arguments clears them all.

        `method_errors`: {method: error code}: that method answers the code (with its HTTP status,
        FAULT_STATUS) on its own and inside a batch. `portal_error`: every REST request answers it,
        as a portal whose subscription lapsed (PAYMENT_REQUIRED, its token refresh refused too) or
        that Bitrix24 blocked by hand (OVERLOAD_LIMIT) does."""
        for code in [*(method_errors or {}).values(), *([portal_error] if portal_error else [])]:
            if code not in FAULT_STATUS:
                raise ValueError(f"no fault {code!r}; known: {sorted(FAULT_STATUS)}")
        with self.lock:
            self.drop_events = float(drop_events)
            self.fail_next = int(fail_next)
            self.fail_status = int(fail_status)
            self.latency_ms = int(latency_ms)
            self.method_errors = {m.lower(): c for m, c in (method_errors or {}).items()}
            self.portal_error = portal_error

    def take_rate_slot(self) -> None:
        """The leaky bucket: +1 per HTTP request, drains `rps` a second, 503 above `burst`.

        It drains on the portal clock: a frozen clock does not drain it, `advance()` does."""
        if not self.limits_enabled:
            return
        now = self.ts()
        if self._bucket_at is not None:
            # A clock set backwards (a test or the demo rewinding) never fills the bucket.
            self._bucket_level = max(0.0, self._bucket_level - max(0.0, now - self._bucket_at) * self.rps)
        self._bucket_at = now
        if self._bucket_level + 1 > self.burst:
            raise RestError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
        self._bucket_level += 1

    def operating(self, method: str) -> tuple[float, float]:
        """(seconds used by `method` in the window, when the oldest of them leaves it)."""
        now = self.ts()
        entry = self._operating.get(method)
        if entry is None:
            return 0.0, now + OPERATING_WINDOW
        spent, total = entry
        while spent and spent[0][0] <= now - OPERATING_WINDOW:
            total -= spent.popleft()[1]
        entry[1] = total = max(total, 0.0)
        reset = (spent[0][0] if spent else now) + OPERATING_WINDOW
        return total, reset

    def check_operating(self, method: str) -> None:
        if not self.limits_enabled:
            return
        used, _ = self.operating(method)
        if used >= self.operating_limit:
            raise RestError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)

    def spend_operating(self, method: str, seconds: float) -> None:
        cost = self.method_cost.get(method, seconds)
        entry = self._operating.setdefault(method, [deque(), 0.0])
        entry[0].append((self.ts(), cost))
        entry[1] += cost
