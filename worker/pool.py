"""The worker's bounded pool: many portals' work side by side in one process, each portal's work a
unit run on its own thread, at most `worker_concurrency` units at once in the whole process.

A portal's work is almost all waiting — on its REST budget (2 requests/s), on the network — so
threads, not processes: 32 of them cost little CPU and let 32 portals wait at once. One unit per
portal at a time (its lease says so across workers; the pool keeps its own threads from even
trying), and a unit's failure is its portal's alone: it is logged and reported, and every other
unit runs on. Fair: units come from two queues — urgent (a portal with only events to apply: short
work a manager is waiting for) before the rest — and a unit that returns AGAIN (a daily run whose
slice of time is over) goes to the back of its queue, so a 100,000-contact portal takes turns with
the small ones instead of holding a slot. Nothing is kept per portal between passes.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

AGAIN = "again"  # what a unit returns to be queued once more (at the back)


@dataclass
class Unit:
    """One portal's piece of work: `run()` returns AGAIN to be queued again, anything else when done."""

    portal_id: int
    run: Callable[[], Any]
    what: str = "work"
    urgent: bool = False


class PortalPool:
    """The process's slots (shared by every pass of the schedule) and the portals in flight."""

    def __init__(self, size: int):
        self.size = max(int(size), 1)
        self._slots = threading.BoundedSemaphore(self.size)
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def busy(self) -> set[int]:
        with self._lock:
            return set(self._busy)

    def run(self, units: Iterable[Unit], *, refill: Callable[[], Iterable[Unit]] | None = None,
            refill_every: float = 1.0, on_error: Callable[[Unit, BaseException], None] | None = None) -> int:
        """Run every unit (and whatever `refill()` adds, asked every `refill_every` seconds while
        the pass lasts) until none is left. Returns how many units ran."""
        queues: tuple[deque[Unit], deque[Unit]] = (deque(), deque())
        queued: set[int] = set()

        def add(more: Iterable[Unit]) -> None:
            for unit in more:
                if unit.portal_id not in queued:  # one unit per portal in this pass's queues
                    queued.add(unit.portal_id)
                    queues[0 if unit.urgent else 1].append(unit)

        add(units)
        running: dict[Future, Unit] = {}
        ran = 0
        next_refill = time.monotonic() + refill_every
        with ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="nezabyt-portal") as executor:
            while True:
                if refill is not None and time.monotonic() >= next_refill:
                    add(refill())
                    next_refill = time.monotonic() + refill_every
                unit = self._next(queues)
                if unit is not None and self._slots.acquire(timeout=0 if running else 0.05):
                    with self._lock:
                        self._busy.add(unit.portal_id)
                    running[executor.submit(self._call, unit)] = unit
                    ran += 1
                    continue
                if unit is not None:  # no slot now: put it back where it was
                    queues[0 if unit.urgent else 1].appendleft(unit)
                if not running:
                    if not any(queues):
                        if refill is None:
                            return ran
                        add(refill())  # the last look before the pass ends
                        if not any(queues):
                            return ran
                    time.sleep(0.05)  # every queued portal is in flight in another pass
                    continue
                timeout = max(0.01, next_refill - time.monotonic()) if refill is not None else None
                done, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    unit = running.pop(future)
                    queued.discard(unit.portal_id)
                    try:
                        again = future.result() == AGAIN
                    except Exception as exc:  # noqa: BLE001 — one portal's trouble is its own
                        log.error("%s of portal %s failed: %s: %s", unit.what, unit.portal_id,
                                  type(exc).__name__, exc, exc_info=exc)
                        if on_error is not None:
                            on_error(unit, exc)
                        continue
                    if again:
                        add([Unit(unit.portal_id, unit.run, unit.what, urgent=False)])

    def _next(self, queues: tuple[deque[Unit], deque[Unit]]) -> Unit | None:
        """The first queued unit whose portal is not in flight (urgent ones first)."""
        busy = self.busy()
        for queue in queues:
            for _ in range(len(queue)):
                unit = queue.popleft()
                if unit.portal_id not in busy:
                    return unit
                queue.append(unit)
        return None

    def _call(self, unit: Unit) -> Any:
        try:
            return unit.run()
        finally:
            with self._lock:
                self._busy.discard(unit.portal_id)
            self._slots.release()


_pools_lock = threading.Lock()


def pool_for(services) -> PortalPool:
    """The process's one pool (its slots bound every pass of the schedule together)."""
    with _pools_lock:
        pool = getattr(services, "_portal_pool", None)
        if pool is None:
            pool = PortalPool(services.settings.worker_concurrency)
            services._portal_pool = pool
        return pool
