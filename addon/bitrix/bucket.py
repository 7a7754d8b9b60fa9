"""This process's own token bucket per REST endpoint: the pace of a client without the portal's shared
budget (addon.bitrix.pace), and that budget's fallback when the database is busy."""
from __future__ import annotations

import threading
import time
from typing import Callable


class Pace:
    """A token bucket (capacity `burst`, refill `rps`/s) shared by every client of one portal in
    this process. The portal drains 2/s with a burst of 50; we keep below it."""

    def __init__(self, rps: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rps = max(float(rps), 0.01)
        self.burst = max(int(burst), 1)
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one request's worth; sleeps while the bucket is empty. Returns the time waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rps)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                wait = (1 - self._tokens) / self.rps
            self._sleep(wait)
            waited += wait


_paces: dict[str, Pace] = {}
_paces_lock = threading.Lock()


def portal_pace(key: str, rps: float, burst: int) -> Pace:
    with _paces_lock:
        pace = _paces.get(key)
        if pace is None or (pace.rps, pace.burst) != (max(float(rps), 0.01), max(int(burst), 1)):
            pace = _paces[key] = Pace(rps, burst)
        return pace
