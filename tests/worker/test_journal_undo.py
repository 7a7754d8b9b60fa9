"""The journal and its undo end to end against the devportal: a daily run that hands lost clients
over and cools others down is one journal entry; its undo, queued as the settings page queues it
and run by the worker, puts the previous status and responsible back on the portal in batches,
records the undo in each client's history, and refuses — listing them — the clients a manager
changed since (and the one whose earlier manager has left)."""
from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from sqlalchemy import select

from addon import journal
from addon.models import JobRun, JournalChange, Outbox, StatusHistory
from tests.worker.conftest import DAY0, at
from worker.jobs import run_queued_jobs
from worker.undo import refusal


def _entry(h):
    with h.services.sessions() as session:
        return journal.entries(session, h.portal_id)


def test_a_daily_run_is_an_entry_and_its_undo_restores_the_portal(harness):
    h = harness
    info = h.dp.seed(departments=2, managers=6, contacts=12, companies=0, months_of_calls=0, deals=0, rng_seed=7)
    h.install(transfer_mode="supervisor", timeline_comments=True)
    managers = info["manager_ids"]
    manager, other = managers[-1], managers[-2]
    for cid in range(1, 13):
        h.dp.records["contact"][cid]["ASSIGNED_BY_ID"] = str(manager if cid <= 6 else other)
    # 1-3 run out of COLD today (lost, handed to the supervisor); 4-6 cool down HOT -> WARM.
    for cid in (1, 2, 3):
        h.put_status("contact", cid, "COLD", at(DAY0 - dt.timedelta(days=95), 10))
    for cid in (4, 5, 6):
        h.put_status("contact", cid, "HOT", at(DAY0 - dt.timedelta(days=31), 10))
    for cid in range(7, 13):
        h.put_status("contact", cid, "WARM", at(DAY0 - dt.timedelta(days=5), 10))
    h.reindex(at(DAY0, 8))
    set_on = {cid: h.row("contact", cid).status_set_on for cid in range(1, 7)}
    summary = h.daily(at(DAY0, 9))
    assert (summary.decayed, summary.losses, summary.transfers) == (6, 3, 3)
    head = int(h.dp.records["contact"][1]["ASSIGNED_BY_ID"])
    assert head != manager

    # The journal: one entry, with its counts, by manager.
    entry = _entry(h)[0]
    assert (entry.kind, entry.day, entry.status) == ("daily", DAY0, "done")
    assert (entry.clients, entry.status_changes, entry.transfers) == (6, 6, 3)
    assert entry.messages == summary.messages > 0
    assert [(m.manager_id, m.status_changes, m.transfers) for m in entry.by_manager] == [(manager, 6, 3)]
    assert entry.can_undo(at(DAY0, 10).replace(tzinfo=None))
    with h.services.sessions() as session:
        changes, total = journal.entry_changes(session, h.portal_id, entry.run_id)
    assert total == 6
    by_id = {c["change"].entity_id: c["change"] for c in changes}
    assert (by_id[1].old_status, by_id[1].new_status, by_id[1].old_assigned_by_id, by_id[1].new_assigned_by_id) == \
        ("COLD", "LOST", manager, head)
    assert (by_id[4].old_status, by_id[4].new_status, by_id[4].new_assigned_by_id) == ("HOT", "WARM", manager)

    # Since the run: a manager sets contact 5 back to HOT, the supervisor gives contact 3 to someone.
    h.clock(at(DAY0, 11))
    h.manager_sets("contact", 5, "HOT", user_id=manager)
    h.dp.act_update("contact", 3, {"ASSIGNED_BY_ID": str(other)}, user_id=head)
    h.drain(at(DAY0, 11, 5))
    assert h.row("contact", 5).status == "HOT"
    # The admin fixes the limit that was too short, then takes the run back.
    days = {"HOT": 60, "COLD": 200}
    h.set_options(statuses=[_with_days(s, days[s.code]) if s.code in days else s for s in h.options().statuses])
    with h.services.sessions() as session:
        undo_id = journal.queue_undo(session, h.portal_id, entry.run_id, 1, at(DAY0, 12).replace(tzinfo=None))
        session.commit()
    calls_before = len(h.dp.calls)
    report = run_queued_jobs(h.services, at(DAY0, 12))
    assert report.errors == [] and report.jobs == 1

    # On the portal: status and responsible back where they were, in one batch of updates.
    for cid in (1, 2):
        assert h.portal_status("contact", cid) == "COLD"
        assert int(h.dp.records["contact"][cid]["ASSIGNED_BY_ID"]) == manager
    assert [h.portal_status("contact", c) for c in (4, 6)] == ["HOT", "HOT"]
    assert h.portal_status("contact", 3) == "LOST" and int(h.dp.records["contact"][3]["ASSIGNED_BY_ID"]) == other
    assert h.portal_status("contact", 5) == "HOT"
    made = h.dp.calls[calls_before:]
    updates = [c for c in made if c["method"] == "crm.contact.update"]
    assert sorted(int(c["params"]["id"]) for c in updates) == [1, 2, 4, 6]
    assert all(c.get("in_batch") for c in updates)
    assert Counter(c["method"] for c in made if not c.get("in_batch"))["batch"] <= 4

    # Our rows and history: the old values, re-dated under today's options; the undo recorded.
    for cid in (1, 2, 4, 6):
        row = h.row("contact", cid)
        assert row.status_set_on == set_on[cid] and row.written_status == row.status
    assert h.row("contact", 1).due_on == set_on[1] + dt.timedelta(days=200)
    assert h.row("contact", 1).assigned_by_id == manager
    with h.services.sessions() as session:
        lines = session.scalars(select(StatusHistory).where(StatusHistory.cause == "undo")
                                .order_by(StatusHistory.entity_id)).all()
        assert [(ln.entity_id, ln.from_status, ln.to_status, ln.by_user_id) for ln in lines] == [
            (1, "LOST", "COLD", 1), (2, "LOST", "COLD", 1), (4, "WARM", "HOT", 1), (6, "WARM", "HOT", 1)]
        assert lines[0].note == f"отмена ежедневного запуска за {DAY0:%d.%m.%Y} (№{entry.run_id}); " \
                                f"ответственный возвращён: #{manager}"
        undo = session.get(JobRun, undo_id)
        assert (undo.status, undo.progress_done, undo.progress_total) == ("done", 6, 6)
        assert undo.summary == {"undone": 4, "refused": 2, "failed": 0, "sending": 0, "due_again": 0}
        refused, n = journal.entry_changes(session, h.portal_id, entry.run_id, state=journal.REFUSED)
        assert n == 2
        assert {(c["change"].entity_id, c["change"].undo_note) for c in refused} == {
            (3, journal.CHANGED_ASSIGNEE), (5, journal.CHANGED_STATUS)}
        assert session.scalars(select(Outbox.status).where(Outbox.job_run_id == undo_id)).all() == ["sent"] * 4
    entry = _entry(h)[0]
    assert entry.undo["status"] == "done" and (entry.undo["undone"], entry.undo["refused"]) == (4, 2)
    assert not entry.can_undo(at(DAY0, 13).replace(tzinfo=None))

    # The echoes of the undo are known as ours: nothing reverted, nothing counted as a manager's.
    h.drain(at(DAY0, 12, 30))
    assert [h.row("contact", c).status for c in (1, 2, 4, 6)] == ["COLD", "COLD", "HOT", "HOT"]
    with h.services.sessions() as session:
        assert not session.scalars(select(StatusHistory).where(StatusHistory.cause.in_(("manager", "revert")),
                                                              StatusHistory.entity_id.in_((1, 2, 4, 6)))).all()
    # And a second undo of the same run is refused.
    with h.services.sessions() as session, pytest.raises(journal.UndoRefused) as refused_again:
        journal.queue_undo(session, h.portal_id, entry.run_id, 1, at(DAY0, 13).replace(tzinfo=None))
    assert refused_again.value.reason == "done"


def _with_days(status, days):
    import dataclasses

    return dataclasses.replace(status, days=days)


def test_an_undo_refuses_after_seven_days_and_when_the_earlier_manager_left(harness):
    h = harness
    info = h.dp.seed(departments=2, managers=6, contacts=4, companies=0, months_of_calls=0, deals=0, rng_seed=7)
    h.install(transfer_mode="supervisor")
    manager = info["manager_ids"][-1]
    for cid in (1, 2):
        h.dp.records["contact"][cid]["ASSIGNED_BY_ID"] = str(manager)
        h.put_status("contact", cid, "COLD", at(DAY0 - dt.timedelta(days=95), 10))
    h.reindex(at(DAY0, 8))
    h.daily(at(DAY0, 9))
    entry = _entry(h)[0]
    late = entry.at + dt.timedelta(days=journal.UNDO_DAYS, minutes=1)
    with h.services.sessions() as session, pytest.raises(journal.UndoRefused) as too_old:
        journal.queue_undo(session, h.portal_id, entry.run_id, 1, late)
    assert too_old.value.reason == "too_old" and not entry.can_undo(late)
    h.dp.deactivate_user(manager)
    with h.services.sessions() as session:
        journal.queue_undo(session, h.portal_id, entry.run_id, 1, entry.at + dt.timedelta(days=6))
        session.commit()
    assert run_queued_jobs(h.services, at(DAY0 + dt.timedelta(days=6), 9)).errors == []
    assert [h.portal_status("contact", c) for c in (1, 2)] == ["LOST", "LOST"]
    with h.services.sessions() as session:
        notes = session.scalars(select(JournalChange.undo_note).where(JournalChange.job_run_id == entry.run_id)).all()
    assert notes == [journal.DEPARTED, journal.DEPARTED]


class _Change:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Row(_Change):
    pass


@pytest.mark.parametrize("portal, row, expected", [
    ({"status": "LOST", "assigned": 9}, {"status": "LOST", "assigned_by_id": 9}, None),
    (None, {"status": "LOST", "assigned_by_id": 9}, journal.GONE),
    ({"status": "LOST", "assigned": 9}, None, journal.UNTRACKED),
    ({"status": "HOT", "assigned": 9}, {"status": "LOST", "assigned_by_id": 9}, journal.CHANGED_STATUS),
    ({"status": "LOST", "assigned": 9}, {"status": "WARM", "assigned_by_id": 9}, journal.CHANGED_STATUS),
    ({"status": "LOST", "assigned": 4}, {"status": "LOST", "assigned_by_id": 9}, journal.CHANGED_ASSIGNEE),
    ({"status": "LOST", "assigned": 9}, {"status": "LOST", "assigned_by_id": 4}, journal.CHANGED_ASSIGNEE),
])
def test_refusal_compares_the_portal_and_our_row_with_what_the_entry_left(portal, row, expected):
    change = _Change(old_status="COLD", new_status="LOST", old_assigned_by_id=5, new_assigned_by_id=9)
    assert refusal(change, portal, _Row(**row) if row else None, active={5, 9}) == expected
    if expected is None:
        assert refusal(change, portal, _Row(**row), active={9}) == journal.DEPARTED
        # only a status change: the responsible may have changed meanwhile, and may have left
        same_hands = _Change(old_status="HOT", new_status="LOST", old_assigned_by_id=9, new_assigned_by_id=9)
        assert refusal(same_hands, {"status": "LOST", "assigned": 4}, _Row(**row), active=set()) is None
