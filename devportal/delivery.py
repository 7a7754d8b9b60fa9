"""The portal's event delivery: events queued for the app's handlers and POSTed from one
background thread, the offline event queue, and waiting for deliveries and requests to settle."""
from __future__ import annotations

import secrets
import threading
import time as _time

import requests

from devportal.phpquery import flatten


class DeliveryMixin:
    """DevPortal's events: firing, queueing and POSTing them."""

    def _start_delivery(self) -> None:
        if self._delivery_thread is None or not self._delivery_thread.is_alive():
            self._http = requests.Session()
            self._delivery_thread = threading.Thread(target=self._deliver_loop, name="devportal-events",
                                                     daemon=True)
            self._delivery_thread.start()

    def _enqueue(self, job: dict) -> None:
        with self._pending_cv:
            self._pending += 1
        self._start_delivery()
        self._queue.put(job)

    def _deliver_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._post_job(job, self._http)
            finally:
                with self._pending_cv:
                    self._pending -= 1
                    self._pending_cv.notify_all()

    def _post_job(self, job: dict, session: requests.Session | None = None) -> None:
        record = {"url": job["url"], "kind": job["kind"], "event": job.get("event"), "time": self.iso()}
        try:
            response = (session or requests).post(job["url"], data=job["pairs"], timeout=10)
            record["status"] = response.status_code
        except requests.RequestException as exc:  # no retries: Bitrix24 logs and drops
            record["status"] = None
            record["error"] = str(exc)
        with self.lock:
            self.deliveries.append(record)

    def request_started(self) -> None:
        with self._idle_cv:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._idle_cv:
            self._in_flight -= 1
            self._idle_cv.notify_all()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no REST request is being answered (one sent by a killed process still runs
        to its end, as on a real portal); False on timeout."""
        deadline = _time.monotonic() + timeout
        with self._idle_cv:
            while self._in_flight:
                left = deadline - _time.monotonic()
                if left <= 0:
                    return False
                self._idle_cv.wait(left)
        return True

    def wait_for_deliveries(self, timeout: float = 5.0) -> bool:
        """Block until every queued event/robot POST has been attempted; False on timeout."""
        deadline = _time.monotonic() + timeout
        with self._pending_cv:
            while self._pending:
                left = deadline - _time.monotonic()
                if left <= 0:
                    return False
                self._pending_cv.wait(left)
        return True

    def fire(self, event: str, entity_id, user_id: int | None, data: dict | None = None,
             refresh: bool = False) -> None:
        """Queue `event` for every handler bound to it (online) and note it for offline readers;
        `refresh`: its auth carries a refresh token too (the app's own install and update events)."""
        event = event.upper()
        with self.lock:
            if self.app is None or not self.app["installed"]:
                return  # a UI app gets nothing before BX24.installFinish()
            payload = data if data is not None else {"FIELDS": {"ID": entity_id}}
            for handler in self.bound_events:
                if handler["event"] != event:
                    continue
                if handler["offline"]:
                    self._store_offline(event, payload, user_id)
                    continue
                if self.drop_events and self._rng.random() < self.drop_events:
                    self.deliveries.append({"url": handler["handler"], "kind": "event", "event": event,
                                            "status": "dropped", "time": self.iso()})
                    continue
                auth_user = int(handler["auth_type"]) or user_id
                form = {"event": event, "event_handler_id": handler["ID"], "data": payload,
                        "ts": int(self.ts()), "auth": self.auth_block(auth_user, refresh=refresh)}
                self._enqueue({"url": handler["handler"], "pairs": flatten(form), "kind": "event",
                               "event": event})

    def _store_offline(self, event: str, payload: dict, user_id) -> None:
        key = (event, str(payload.get("FIELDS", {}).get("ID", "")))
        self._offline_id += 1
        self.offline_events.pop(key, None)  # the queue keeps only the latest record per object
        self.offline_events[key] = {"ID": str(self._offline_id), "TIMESTAMP_X": self.iso(), "EVENT_NAME": event,
                                    "EVENT_DATA": payload, "EVENT_ADDITIONAL": {"user_id": str(user_id or 0)},
                                    "MESSAGE_ID": secrets.token_hex(16), "PROCESS_ID": None, "ERROR": "0"}
