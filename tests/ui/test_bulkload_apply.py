"""Bulk load end to end against the devportal: matching by ID, phone and e-mail with batched
crm.duplicate.findbycomm, applying in batches of 50, exactly once also across a crash between a
batch and its commit, the report; and the 100,000-row load with `nezabyt import` killed halfway."""
from __future__ import annotations

import collections
import csv
import datetime as dt
import io
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from addon.bulkload.report import report_csv
from addon.bulkload.staging import prepare_import
from addon.models import ImportJob, ImportRow, JobRun, PortalSettings, StatusHistory, TrackedEntity
from addon.options import Options
from addon.bitrix.client import PortalClient
from worker.imports import apply_import

from .conftest import add_contacts, install_on, update_calls

NOW = dt.datetime(2026, 11, 22, 9, 0)
TODAY = dt.date(2026, 11, 22)


def stage(services, portal_id, text: str, filename="load.csv") -> int:
    with services.sessions() as session:
        opts = Options.from_dict(session.get(PortalSettings, portal_id).data)
        with PortalClient(services, portal_id) as client:
            staged = prepare_import(session, client, portal_id, filename, text.encode(), opts, 1, NOW, TODAY)
        session.commit()
    return staged.job_id


def status_items(services, portal_id, entity_type="contact") -> dict[str, str]:
    with services.sessions() as session:
        return session.get(PortalSettings, portal_id).field_items[entity_type]


def test_match_preview_apply_and_report(services, fast_devportal, app_server):
    portal_id = install_on(services, fast_devportal, app_server, events=False)
    ids = add_contacts(fast_devportal, 30)
    # two contacts share a phone: matching by it is ambiguous
    twin = int(fast_devportal.portal.act_add("contact", {"NAME": "Двойник",
                                                         "PHONE": [{"VALUE": "8 (917) 000-00-05"}]}))
    before = len(fast_devportal.portal.calls)
    text = ("ID;Телефон;E-mail;Статус;Дата\n"
            f"{ids[0]};;;Горячий;01.11.2026\n"
            ";+7 917 000-00-01;;Тёплый;02.11.2026 10:00:00\n"
            ";89170000002;;COLD;\n"
            ";;C3@Example.com;LOST;\n"
            ";+7 (917) 000-00-05;;HOT;\n"        # ambiguous
            ";+7 999 999-99-99;;HOT;\n"          # nobody has it
            ";;ghost@example.com;HOT;\n"         # nobody has it
            f"{ids[0]};;;WARM;\n"                # the same client again
            "999999;;;HOT;\n"                    # no such ID: the portal says so on apply
            ";;;Нет такого;\n")
    job_id = stage(services, portal_id, text)
    lookups = fast_devportal.portal.calls[before:]
    assert any(c["method"] == "crm.duplicate.findbycomm" for c in lookups)
    assert not any(c["method"] == "crm.contact.update" for c in lookups)  # preview writes nothing
    with services.sessions() as session:
        rows = {r.row_no: r for r in session.scalars(select(ImportRow).where(ImportRow.job_id == job_id))}
        job = session.get(ImportJob, job_id)
        assert (job.total_rows, job.valid_rows, job.status) == (10, 5, "preview")
    assert [rows[n].entity_id for n in (2, 3, 4, 5)] == [ids[0], ids[1], ids[2], ids[3]]
    assert "several contacts" in rows[6].error and str(twin) in rows[6].error
    assert "no contact with phone +79999999999" in rows[7].error
    assert "no contact with email ghost@example.com" in rows[8].error
    assert "already in row 2" in rows[9].error
    assert rows[10].state == "pending"
    assert "unknown status" in rows[11].error

    summary = apply_import(services, job_id, NOW)
    assert (summary.applied, summary.failed, summary.invalid) == (4, 1, 5)
    items = status_items(services, portal_id)
    records = fast_devportal.portal.records["contact"]
    assert [str(records[i]["UF_CRM_NEZABYT_STATUS"]) for i in ids[:4]] == [
        items["HOT"], items["WARM"], items["COLD"], items["LOST"]]
    with services.sessions() as session:
        tracked = {e.entity_id: e for e in session.scalars(select(TrackedEntity))}
        assert 999999 not in tracked  # the failed write left no service-table row behind
        assert tracked[ids[0]].status == "HOT" and tracked[ids[0]].status_set_on == dt.date(2026, 11, 1)
        assert tracked[ids[0]].due_on == dt.date(2026, 12, 1)  # 30 days of HOT
        assert tracked[ids[1]].status_set_on == dt.date(2026, 11, 2)
        assert tracked[ids[2]].status_set_on == TODAY  # no date: the day of the load
        assert tracked[ids[0]].written_status == "HOT"  # the echo event will be recognised
        assert session.scalar(select(func.count()).select_from(StatusHistory)
                              .where(StatusHistory.cause == "import")) == 4
        assert "no contact with ID 999999" in session.scalars(
            select(ImportRow.error).where(ImportRow.job_id == job_id, ImportRow.row_no == 10)).one()
        run = session.scalars(select(JobRun).where(JobRun.key == f"import:{job_id}")).one()
        assert (run.status, run.progress_done, run.progress_total) == ("done", 5, 5)
        report = list(csv.reader(io.StringIO("".join(report_csv(session, job_id))), delimiter=";"))
    assert report[0][0] == "Строка" and len(report) == 11
    assert report[1][7] == "загружено" and report[6][7] == "ошибка в строке"

    calls = len(update_calls(fast_devportal))
    assert apply_import(services, job_id, NOW).applied == 4  # a rerun writes nothing
    assert len(update_calls(fast_devportal)) == calls


class CrashAfterSending:
    """A PortalClient that 'dies' right after the portal answered its n-th batch HTTP call of
    updates, before the job could commit — the worst moment for exactly-once."""

    def __init__(self, client, crash_on: int):
        self.client, self.crash_on, self.update_calls = client, crash_on, 0

    def batch(self, commands, halt=False):
        items = list(commands.items())
        answer = None
        for i in range(0, len(items), 50):  # one HTTP call each, as PortalClient sends them
            part = self.client.batch(dict(items[i:i + 50]), halt)
            if answer is None:
                answer = part
            else:
                answer.results.update(part.results)
                answer.errors.update(part.errors)
            if any(m.endswith(".update") for m, _ in dict(items[i:i + 50]).values()):
                self.update_calls += 1
                if self.update_calls == self.crash_on:
                    raise KeyboardInterrupt("killed")
        return answer


def test_crash_between_batch_and_commit_writes_each_row_once(services, fast_devportal, app_server):
    portal_id = install_on(services, fast_devportal, app_server, events=False)
    ids = add_contacts(fast_devportal, 1200)
    job_id = stage(services, portal_id, "ID,Status\n" + "".join(f"{i},WARM\n" for i in ids))
    with PortalClient(services, portal_id) as real:
        with pytest.raises(KeyboardInterrupt):  # dies inside the second chunk, after 3 of its 10 calls
            apply_import(services, job_id, NOW, client=CrashAfterSending(real, crash_on=13))
    with services.sessions() as session:
        states = collections.Counter(session.scalars(select(ImportRow.state).where(ImportRow.job_id == job_id)))
    assert states == {"applied": 500, "sending": 500, "pending": 200}
    assert len(update_calls(fast_devportal)) == 650
    summary = apply_import(services, job_id, NOW)
    assert summary.applied == 1200
    per_entity = collections.Counter(int(c["params"]["id"]) for c in update_calls(fast_devportal))
    assert set(per_entity) == set(ids) and set(per_entity.values()) == {1}
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(StatusHistory)) == 1200


@pytest.mark.slow
def test_100000_rows_killed_halfway_then_rerun(services, fast_devportal, app_server, tmp_path):
    """`nezabyt import FILE --apply` as a separate process, SIGKILLed halfway through, then run
    again: every valid row is written exactly once and the bad rows are reported, not written."""
    n = 100_000
    portal_id = install_on(services, fast_devportal, app_server, events=False)
    portal = fast_devportal.portal
    with portal.lock:  # 100,000 clients straight into the peer's memory (no events: none are bound)
        for _ in range(n):
            portal.add_record("contact", {"NAME": "x"}, fire=False)
    statuses = ["HOT", "Тёплый", "COLD", "NEW", "LOST"]
    lines = ["ID;Статус;Дата"]
    bad = set()
    for i in range(1, n + 1):
        if i % 997 == 0:
            lines.append(f"{i};Никакой;")
            bad.add(i)
        else:
            lines.append(f"{i};{statuses[i % 5]};{(i % 28) + 1:02d}.10.2026")
    path = tmp_path / "statuses-100k.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = dict(os.environ, DATABASE_URL=services.settings.database_url,
               NEZABYT_SECRET_KEY=services.settings.secret_key, NEZABYT_PORTAL_RPS="1000",
               NEZABYT_PORTAL_BURST="1000")
    with services.sessions() as session:
        member_id = session.get(__import__("addon.models", fromlist=["Portal"]).Portal, portal_id).member_id
    command = [sys.executable, "-m", "addon", "import", str(path), "--portal", member_id, "--apply",
               "--now", "2026-11-22T09:00:00+00:00"]
    log = tmp_path / "first-run.log"
    with open(log, "wb") as out:
        first = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # waiting for the other process, not for a clock
            with services.sessions() as session:
                applied = session.scalar(select(func.coalesce(func.sum(ImportJob.applied_rows), 0)))
            if applied >= n // 2 or first.poll() is not None:
                break
            time.sleep(0.2)
        assert first.poll() is None, log.read_text()[-2000:]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    with services.sessions() as session:
        job = session.scalars(select(ImportJob)).one()
        assert job.status == "running" and n // 2 <= job.applied_rows < n - len(bad)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "continuing import" in second.stdout

    per_entity = collections.Counter(int(c["params"]["id"]) for c in update_calls(fast_devportal))
    assert len(per_entity) == n - len(bad)
    assert set(per_entity.values()) == {1}  # exactly once, across the kill
    assert not bad & set(per_entity)
    items = status_items(services, portal_id)
    codes = {"HOT": "HOT", "Тёплый": "WARM", "COLD": "COLD", "NEW": "NEW", "LOST": "LOST"}
    records = portal.records["contact"]
    assert all(str(records[i]["UF_CRM_NEZABYT_STATUS"]) == items[codes[statuses[i % 5]]]
               for i in range(1, n + 1) if i not in bad)
    with services.sessions() as session:
        job = session.scalars(select(ImportJob)).one()
        assert (job.status, job.applied_rows, job.valid_rows) == ("done", n - len(bad), n - len(bad))
        assert session.scalar(select(func.count()).select_from(TrackedEntity)) == n - len(bad)
        assert session.scalar(select(func.count()).select_from(StatusHistory)) == n - len(bad)


def test_downloads_and_applying_from_the_page(services, fast_devportal, app_server):
    """The template (CSV, XLSX), the upload, the queued run the worker picks up, and the report."""
    import requests
    from openpyxl import load_workbook

    from settings_ui.access import PageTokens, PageUser
    from worker.jobs import run_queued_jobs

    portal_id = install_on(services, fast_devportal, app_server, events=False)
    ids = add_contacts(fast_devportal, 5)
    token = PageTokens(services.settings.secret_key).issue(
        PageUser(portal_id=portal_id, user_id=1, is_admin=True, lang="ru", domain=fast_devportal.domain))
    base = app_server.url
    template = requests.get(f"{base}/ui/import/template.csv", params={"t": token}, timeout=10)
    assert template.status_code == 200
    assert template.content.decode("utf-8-sig").startswith("ID;Телефон;E-mail;Статус;Дата;Тип")
    xlsx = requests.get(f"{base}/ui/import/template.xlsx", params={"t": token}, timeout=10)
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    assert (sheet.title, sheet["D1"].value) == ("Статусы", "Статус")
    # the template, as downloaded, is a file the upload reads (Russian headers and type words)
    from addon.bulkload.files import map_columns, read_table

    header = read_table("t.csv", template.content).header
    assert set(map_columns(header)) == {"id", "phone", "email", "status", "date", "entity_type"}
    assert requests.get(f"{base}/ui/import/template.csv", timeout=10).status_code == 403

    body = "ID;Статус\n" + "".join(f"{i};Тёплый\n" for i in ids) + "77777;Тёплый\n"
    page = requests.post(f"{base}/ui/import", data={"t": token, "entity_type": "contact"},
                         files={"file": ("load.csv", body.encode())}, timeout=30)
    assert page.status_code == 200 and 'id="import-preview"' in page.text
    with services.sessions() as session:
        job_id = session.scalars(select(ImportJob.id)).one()
    run_id = requests.post(f"{base}/ui/import/{job_id}/apply", headers={"X-Nezabyt-Token": token},
                           timeout=10).json()["run_id"]
    assert requests.get(f"{base}/ui/jobs/{run_id}", headers={"X-Nezabyt-Token": token},
                        timeout=10).json()["status"] == "queued"
    assert not run_queued_jobs(services, NOW).errors
    progress = requests.get(f"{base}/ui/jobs/{run_id}", headers={"X-Nezabyt-Token": token}, timeout=10).json()
    assert (progress["status"], progress["percent"], progress["summary"]["applied"]) == ("done", 100, 5)
    report = requests.get(f"{base}/ui/import/{job_id}/report.csv", params={"t": token}, timeout=10)
    lines = report.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "Строка;Тип;Найден по;Значение;ID клиента;Статус;Дата;Результат;Ошибка"
    assert len(lines) == 7 and lines[-1].endswith("не удалось;нет клиента (контакт) с ID 77777")
    assert ";Тёплый;" in lines[1] and "pending" not in report.text
    # asking again for a finished load queues nothing
    again = requests.post(f"{base}/ui/import/{job_id}/apply", headers={"X-Nezabyt-Token": token}, timeout=10)
    assert again.json()["run_id"] == run_id
    with services.sessions() as session:
        assert session.get(JobRun, run_id).status == "done"


def test_a_stopped_load_is_queued_again_when_asked(services, fast_devportal, app_server):
    from addon.bulkload.staging import queue_import

    portal_id = install_on(services, fast_devportal, app_server, events=False)
    ids = add_contacts(fast_devportal, 3)
    job_id = stage(services, portal_id, "ID,Status\n" + "".join(f"{i},HOT\n" for i in ids))
    with services.sessions() as session:
        run_id = queue_import(session, session.get(ImportJob, job_id), NOW)
        session.get(JobRun, run_id).status = "running"  # its worker died mid-way
        session.commit()
        assert queue_import(session, session.get(ImportJob, job_id), NOW) == run_id
        session.commit()
        assert session.get(JobRun, run_id).status == "queued"


def test_a_large_file_is_matched_by_the_worker_with_a_progress_bar(services, fast_devportal, app_server,
                                                                    monkeypatch):
    """Over INLINE_MATCH_ROWS rows to match by phone or e-mail, the upload answers at once with the
    job `matching` and a queued run; the worker matches the rows in chunks (progress in the run),
    refuses a later row for a client already in the file, and opens the preview; applying before
    that is refused. A pass killed midway is resumed and matches only what is left."""
    import requests

    from addon.bulkload import matching, staging
    from settings_ui.access import PageTokens, PageUser
    from worker import imports
    from worker.jobs import run_queued_jobs

    monkeypatch.setattr(staging, "INLINE_MATCH_ROWS", 3)
    monkeypatch.setattr(imports, "MATCH_CHUNK", 4)
    portal_id = install_on(services, fast_devportal, app_server, events=False)
    ids = add_contacts(fast_devportal, 8)
    token = PageTokens(services.settings.secret_key).issue(
        PageUser(portal_id=portal_id, user_id=1, is_admin=True, lang="en", domain=fast_devportal.domain))
    base = app_server.url
    body = ("Phone;Email;Status\n" + "".join(f"+7 917 000-00-0{n};;HOT\n" for n in range(1, 6))
            + ";C6@Example.com;WARM\n"
            + "+7 999 999-99-99;;HOT\n"       # nobody has it
            + "8 917 000-00-01;;COLD\n"       # the client of row 2 again
            + f"x;;HOT\n")                     # not a phone: refused while parsing
    before = len(fast_devportal.portal.calls)
    page = requests.post(f"{base}/ui/import", data={"t": token, "entity_type": "contact"},
                         files={"file": ("big.csv", body.encode())}, timeout=30)
    assert page.status_code == 200 and 'id="import-matching"' in page.text and 'id="import-preview"' not in page.text
    assert not [c for c in fast_devportal.portal.calls[before:] if c["method"].startswith("crm.")]  # no lookup
    with services.sessions() as session:
        job = session.scalars(select(ImportJob)).one()
        run = session.scalars(select(JobRun).where(JobRun.kind == "import_match")).one()
        assert (job.status, run.status, run.progress_total) == ("matching", "queued", 8)
        job_id, run_id = job.id, run.id
    refused = requests.post(f"{base}/ui/import/{job_id}/apply", headers={"X-Nezabyt-Token": token}, timeout=10)
    assert refused.status_code == 409

    # The first pass dies after its first chunk of 4 rows was committed.
    real_match = matching.match_drafts
    seen: list[int] = []

    def match_then_die(client, drafts, region="RU"):
        if seen:
            raise KeyboardInterrupt("killed")
        seen.append(len(drafts))
        real_match(client, drafts, region)

    monkeypatch.setattr(imports, "match_drafts", match_then_die)
    with pytest.raises(KeyboardInterrupt):
        imports.match_import(services, job_id, run_id)
    with services.sessions() as session:
        assert session.get(JobRun, run_id).progress_done == 4
        assert session.scalar(select(func.count()).select_from(ImportRow).where(
            ImportRow.job_id == job_id, ImportRow.entity_id.is_not(None))) == 4
    monkeypatch.setattr(imports, "match_drafts", real_match)
    lookups = len(fast_devportal.portal.calls)
    with services.sessions() as session:  # the worker that died left its run "running"
        session.get(JobRun, run_id).status, session.get(JobRun, run_id).owner = "running", "dead-worker"
        session.commit()
    assert not run_queued_jobs(services, NOW).errors
    resumed = fast_devportal.portal.calls[lookups:]
    asked = [v for c in resumed if c["method"] == "crm.duplicate.findbycomm"
             for v in (lambda vs: vs.values() if isinstance(vs, dict) else vs)(c["params"]["values"])]
    assert sorted(map(str, asked)) == ["+79170000001", "+79170000005", "+79999999999", "c6@example.com"]

    progress = requests.get(f"{base}/ui/jobs/{run_id}", headers={"X-Nezabyt-Token": token}, timeout=10).json()
    assert (progress["status"], progress["percent"]) == ("done", 100)
    with services.sessions() as session:
        job = session.get(ImportJob, job_id)
        rows = {r.row_no: r for r in session.scalars(select(ImportRow).where(ImportRow.job_id == job_id))}
    assert (job.status, job.total_rows, job.valid_rows) == ("preview", 9, 6)
    assert [rows[n].entity_id for n in range(2, 8)] == ids[1:7]
    assert "no contact with phone +79999999999" in rows[8].error
    assert "already in row 2" in rows[9].error
    assert rows[10].state == "invalid"
    page = requests.post(f"{base}/ui/page", data={"t": token, "tab": "import", "import_job": str(job_id)}, timeout=10)
    assert 'id="import-preview"' in page.text and "6 ready to load" in page.text
    run_id = requests.post(f"{base}/ui/import/{job_id}/apply", headers={"X-Nezabyt-Token": token},
                           timeout=10).json()["run_id"]
    assert not run_queued_jobs(services, NOW).errors
    assert apply_import(services, job_id, NOW).applied == 6
