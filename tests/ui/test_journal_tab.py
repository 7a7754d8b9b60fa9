"""The «Журнал» tab over HTTP: the entries with their counts, an entry's drill-down by manager and
by undo outcome, queueing its undo (once), and who may see it."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from addon.models import ImportJob, JobRun, utcnow
from tests.factories import make_change, make_job_run, make_tracked

from .conftest import MANAGER_AUTH, MANAGER_ID, open_app, page_token


def _seed(services, portal_id, finished_at=None):
    finished_at = finished_at or utcnow() - dt.timedelta(hours=2)
    with services.sessions() as session:
        daily = make_job_run(session, portal_id, day=dt.date(2026, 3, 2), status="done",
                             params={"day": "2026-03-02", "planned": True}, summary={"messages": 3},
                             started_at=finished_at, finished_at=finished_at)
        job = ImportJob(portal_id=portal_id, filename="статусы.csv", status="done", total_rows=1, valid_rows=1)
        session.add(job)
        session.flush()
        load = make_job_run(session, portal_id, kind="import", key=f"import:{job.id}", status="done",
                            params={"import_job_id": job.id}, started_at=finished_at, finished_at=finished_at)
        make_change(session, daily.id, portal_id, 11, "COLD", "LOST", old_assigned_by_id=MANAGER_ID,
                    new_assigned_by_id=3)
        make_change(session, daily.id, portal_id, 12, "HOT", "WARM", old_assigned_by_id=MANAGER_ID,
                    new_assigned_by_id=MANAGER_ID, undo_state="refused", undo_note="status_changed")
        make_change(session, daily.id, portal_id, 13, "HOT", "WARM", old_assigned_by_id=8, new_assigned_by_id=8)
        make_change(session, load.id, portal_id, 14, None, "HOT")
        make_tracked(session, portal_id, 11, "LOST", title="ООО «Ромашка»", assigned_by_id=3)
        session.commit()
        return daily.id, load.id


def test_the_journal_lists_runs_and_loads_and_drills_down(client, services, portal, portal_auth):
    daily_id, load_id = _seed(services, portal)
    token = page_token(open_app(client))
    html = client.post("/ui/page", data={"t": token, "tab": "journal"}).get_data(as_text=True)
    pane = html.split('id="pane-journal"')[1].split("</section>")[0]
    assert 'class="pane active"' in html.split('id="pane-journal"')[0][-40:]
    rows = pane.split('class="journal-entry"')[1:]
    assert len(rows) == 2
    assert "Загрузка статусов «статусы.csv»" in rows[0] and "Ежедневный запуск за 02.03.2026" in rows[1]
    cells = [c.split(">", 1)[1].split("<")[0] for c in rows[1].split('<td class="num"')[1:4]]
    assert cells == ["3", "1", "3"]  # status changes, handed over, messages
    assert "можно отменить до" in rows[1]

    detail = client.post(f"/ui/journal/{daily_id}", headers={"X-Nezabyt-Token": token}).get_json()["html"]
    assert 'id="journal-managers"' in detail and detail.count("<tr data-manager=") == 2
    assert detail.count("<tr data-entity=") == 3 and "ООО «Ромашка»" in detail
    assert "статус с тех пор изменён" in detail and 'id="undo-btn"' in detail
    one = client.post(f"/ui/journal/{daily_id}", data={"manager": "8"},
                      headers={"X-Nezabyt-Token": token}).get_json()["html"]
    assert [r.split('"')[1] for r in one.split("<tr data-entity=")[1:]] == ["contact:13"]
    refused = client.post(f"/ui/journal/{daily_id}", data={"state": "refused"},
                          headers={"X-Nezabyt-Token": token}).get_json()["html"]
    assert [r.split('"')[1] for r in refused.split("<tr data-entity=")[1:]] == ["contact:12"]
    assert client.post(f"/ui/journal/{daily_id}", data={"state": "nonsense"},
                       headers={"X-Nezabyt-Token": token}).status_code == 400

    first = client.post(f"/ui/journal/{daily_id}/undo", headers={"X-Nezabyt-Token": token})
    again = client.post(f"/ui/journal/{daily_id}/undo", headers={"X-Nezabyt-Token": token})
    assert first.status_code == again.status_code == 200 and first.get_json() == again.get_json()
    with services.sessions() as session:
        undo = session.get(JobRun, first.get_json()["run_id"])
        assert (undo.kind, undo.status, undo.params["entry_id"], undo.params["requested_by"]) == \
            ("undo", "queued", daily_id, 1)
        assert undo.progress_total == 3
    progress = client.get(f"/ui/jobs/{undo.id}", headers={"X-Nezabyt-Token": token}).get_json()
    assert progress["kind"] == "undo" and progress["status"] == "queued"
    html = client.post("/ui/page", data={"t": token, "tab": "journal"}).get_data(as_text=True)
    assert "отмена в очереди" in html


def test_an_old_entry_cannot_be_undone_and_managers_do_not_see_the_journal(client, services, portal, portal_auth):
    daily_id, _ = _seed(services, portal, finished_at=utcnow() - dt.timedelta(days=8))
    token = page_token(open_app(client))
    html = client.post("/ui/page", data={"t": token, "tab": "journal"}).get_data(as_text=True)
    assert "прошло больше 7 дней" in html
    refused = client.post(f"/ui/journal/{daily_id}/undo", headers={"X-Nezabyt-Token": token})
    assert refused.status_code == 409
    assert refused.get_json()["error_description"] == "Отменить можно только в течение 7 дней после запуска."
    with services.sessions() as session:
        assert session.scalars(select(JobRun).where(JobRun.kind == "undo")).all() == []
    assert client.post("/ui/journal/999999/undo", headers={"X-Nezabyt-Token": token}).status_code == 404

    manager = page_token(open_app(client, auth=MANAGER_AUTH))
    page = client.post("/ui/page", data={"t": manager, "tab": "journal"}).get_data(as_text=True)
    assert 'id="pane-journal"' not in page and 'data-tab="journal"' not in page
    assert client.post(f"/ui/journal/{daily_id}", headers={"X-Nezabyt-Token": manager}).status_code == 403
    assert client.post(f"/ui/journal/{daily_id}/undo", headers={"X-Nezabyt-Token": manager}).status_code == 403
