"""The outbox against the devportal: a write the portal keeps refusing for a passing reason is tried
a bounded number of times, then marked failed and shown, and never holds up the portal's queue."""
from __future__ import annotations

import dataclasses

from sqlalchemy import select

from addon import notifications, outbox
from addon.bitrix.client import portal_client
from addon.doctor.stored import check_health
from addon.models import NotificationLog, Outbox, Portal
from tests.worker.conftest import DAY0, at


def _plan(h, writes):
    with h.services.sessions() as s:
        for key, method, params in writes:
            outbox.plan_write(s, h.portal_id, key, method, params)
        s.commit()


def _rows(h):
    with h.services.sessions() as s:
        return {r.key: (r.status, r.attempts, r.error) for r in s.scalars(select(Outbox).order_by(Outbox.id))}


def test_a_write_that_always_fails_for_a_passing_reason_is_given_up_after_its_attempts(harness):
    h = harness
    h.dp.seed(departments=1, managers=2, contacts=60, companies=2, months_of_calls=0, deals=0, rng_seed=3)
    h.install()
    h.services.settings = dataclasses.replace(h.services.settings, send_attempts=3)
    # The company write is refused every time (its command alone answers 500); 60 contact writes
    # are planned behind it, more than one batch.
    _plan(h, [("company:1", "crm.company.update", {"id": 1, "fields": {"COMMENTS": "x"}})]
          + [(f"contact:{i}", "crm.contact.update", {"id": i, "fields": {"COMMENTS": "x"}}) for i in range(1, 61)])
    h.dp.set_faults(method_errors={"crm.company.update": "INTERNAL_SERVER_ERROR"})
    client = portal_client(h.services, h.portal_id)
    passes, sent = 0, 0
    while any(status in ("pending", "sending") for status, _, _ in _rows(h).values()):
        passes += 1
        assert passes <= 10, _rows(h)
        sent += outbox.send_outbox(h.services, client, h.portal_id)
    rows = _rows(h)
    assert sent == 60 and all(rows[f"contact:{i}"][0] == "sent" for i in range(1, 61))
    status, attempts, error = rows["company:1"]
    assert (status, attempts) == ("failed", 3) and "gave up after 3 attempts" in error
    assert "INTERNAL_SERVER_ERROR" in error
    assert passes == 3
    updates = [c for c in h.dp.calls if c["method"] == "crm.company.update"]
    assert len(updates) == 3  # never sent again once given up
    with h.services.sessions() as s:
        health = check_health(s, s.get(Portal, h.portal_id), at(DAY0, 12))
    assert not health.ok and "1 writes" in health.found


def test_a_paused_portal_spends_no_attempts(harness):
    """OVERLOAD_LIMIT or a lapsed subscription refuses every call: that is the portal's state, not
    the write's, so the write keeps all its attempts for when the portal is back."""
    h = harness
    h.dp.seed(departments=1, managers=2, contacts=5, companies=1, months_of_calls=0, deals=0, rng_seed=3)
    h.install()
    h.services.settings = dataclasses.replace(h.services.settings, send_attempts=2)
    _plan(h, [("contact:1", "crm.contact.update", {"id": 1, "fields": {"COMMENTS": "x"}})])
    with h.services.sessions() as s:
        notifications.plan_message(s, h.portal_id, "m:1", 1, DAY0, "digest", "Привет")
        s.commit()
    h.dp.set_faults(portal_error="PAYMENT_REQUIRED")  # every request refused: the subscription lapsed
    client = portal_client(h.services, h.portal_id)
    for _ in range(3):
        outbox.send_outbox(h.services, client, h.portal_id)
        notifications.send_notifications(h.services, client, h.portal_id)
    assert _rows(h)["contact:1"][:2] in (("pending", 0), ("sending", 0))
    h.dp.set_faults()
    assert outbox.send_outbox(h.services, client, h.portal_id) == 1
    assert notifications.send_notifications(h.services, client, h.portal_id) == 1
    with h.services.sessions() as s:
        message = s.scalars(select(NotificationLog)).one()
        assert (message.status, message.attempts) == ("sent", 0)
