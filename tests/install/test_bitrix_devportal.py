"""The Bitrix24 adapter against the devportal: batches of writes are not re-sent after a 5xx or a
timeout (fast-bitrix24 would), a slow portal stops a web request at its deadline."""
from __future__ import annotations

import time

import pytest

from addon.bitrix.client import portal_client
from addon.bitrix.errors import PortalError
from tests.install.test_end_to_end import install, portal_row


def _batches(dp) -> int:
    return sum(1 for c in dp.calls if c["method"] == "batch" and not c["in_batch"])


def _comment(contact: int) -> dict:
    return {"fields": {"ENTITY_ID": contact, "ENTITY_TYPE": "contact", "COMMENT": "Статус: Новый"}}


def test_a_batch_of_writes_answered_500_is_not_sent_again(services, devportal, app_server):
    install(devportal, app_server)
    dp = devportal.portal
    assert dp.wait_for_deliveries(timeout=10)  # ONAPPINSTALL's own calls are over before faults are set
    contact = dp.act_add("contact", {"NAME": "Клиент"})
    assert dp.wait_for_deliveries(timeout=10)  # the contact's event (and its first-token check) is over too
    client = portal_client(services, portal_row(services).id)
    before, comments = _batches(dp), len(dp.timeline_comments)
    dp.set_faults(fail_next=1, fail_status=500)
    answer = client.batch({"c": ("crm.timeline.comment.add", _comment(contact))})
    assert answer.errors["c"].uncertain
    assert _batches(dp) == before + 1
    assert len(dp.timeline_comments) == comments  # the library's retry would have posted it


def test_a_batch_of_reads_answered_500_is_retried(services, devportal, app_server):
    install(devportal, app_server)
    dp = devportal.portal
    assert dp.wait_for_deliveries(timeout=10)  # ONAPPINSTALL's own calls are over before faults are set
    contact = dp.act_add("contact", {"NAME": "Клиент"})
    assert dp.wait_for_deliveries(timeout=10)  # the contact's event (and its first-token check) is over too
    dp.set_faults(fail_next=1, fail_status=500)
    got = portal_client(services, portal_row(services).id).get_many("crm.contact.get", [contact])
    assert isinstance(got[contact], dict)


def test_a_slow_portal_ends_a_web_request_at_its_deadline_without_repeating_the_write(services, devportal,
                                                                                     app_server):
    install(devportal, app_server)
    dp = devportal.portal
    assert dp.wait_for_deliveries(timeout=10)  # ONAPPINSTALL's own calls are over before faults are set
    contact = dp.act_add("contact", {"NAME": "Клиент"})
    assert dp.wait_for_deliveries(timeout=10)  # the contact's event (and its first-token check) is over too
    client = portal_client(services, portal_row(services).id, deadline=1.0)
    dp.set_faults(latency_ms=2500)
    sent = len(dp.calls)
    started = time.monotonic()
    with pytest.raises(PortalError) as info:
        client.call("crm.timeline.comment.add", _comment(contact))
    assert time.monotonic() - started < 2.4
    assert getattr(info.value, "uncertain", False) and info.value.code == "READ_TIMEOUT"
    dp.set_faults(latency_ms=0)
    posted = lambda: len([c for c in dp.calls[sent:] if c["method"] == "crm.timeline.comment.add"])  # noqa: E731
    deadline = time.monotonic() + 5
    while posted() == 0 and time.monotonic() < deadline:  # the devportal finishes the slow request
        time.sleep(0.05)
    assert posted() == 1
