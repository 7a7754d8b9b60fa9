"""The admin's day with Nezabyt in a real browser, inside the devportal's portal page: load 10,000
statuses from a file with bad rows (preview errors, apply, progress to 100%), see the what-if
preview, change the settings and see them applied on the portal, open a contact's card tab."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from addon.models import ImportJob, PortalSettings, TrackedEntity
from addon.options import Options
from tests.ui.conftest import add_contacts, install_on

pytestmark = [pytest.mark.browser, pytest.mark.slow]


class Worker:
    """The worker process's job loop (queued imports and re-indexes) in a thread, for the test."""

    def __init__(self, services):
        self.services, self.stop_flag, self.errors = services, threading.Event(), []
        self.thread = threading.Thread(target=self.run, name="nezabyt-worker", daemon=True)

    def run(self):
        from worker.jobs import run_queued_jobs

        while not self.stop_flag.is_set():
            report = run_queued_jobs(self.services, dt.datetime.now(dt.timezone.utc))
            self.errors += report.errors
            self.stop_flag.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(10)


def bulk_file(ids: list[int]) -> tuple[str, int]:
    """10,000 rows: most by ID, some by phone and e-mail, and 40 bad ones of every kind."""
    lines = ["ID;Телефон;E-mail;Статус;Дата"]
    bad = 0
    last_month = dt.date.today() - dt.timedelta(days=40)
    for n, entity_id in enumerate(ids):
        when = (last_month + dt.timedelta(days=n % 20)).strftime("%d.%m.%Y")
        status = ("Горячий", "WARM", "Холодный")[n % 3]
        if n % 250 == 7:
            lines.append(f"{entity_id};;;Непонятный;{when}")
            bad += 1
        elif n % 250 == 11:
            lines.append(f"{entity_id};;;HOT;32.13.2020")
            bad += 1
        elif n % 500 == 3:
            lines.append(f";+7 (917) {n:03d}-00-0;;HOT;{when}")  # a phone nobody has / too short
            bad += 1
        elif n % 50 == 5:
            phone = 9170000000 + n
            lines.append(f";8 ({str(phone)[:3]}) {str(phone)[3:6]}-{str(phone)[6:8]}-{str(phone)[8:]};;{status};{when}")
        elif n % 50 == 6:
            lines.append(f";;C{n}@example.com;{status};{when}")
        else:
            lines.append(f"{entity_id};;;{status};{when}")
    return "\n".join(lines) + "\n", bad


def test_admin_loads_statuses_previews_changes_saves_and_opens_a_card(
        page, services, fast_devportal, app_server, artifacts_dir, tmp_path):
    portal_id = install_on(services, fast_devportal, app_server, events=False)
    fast_devportal.portal.add_user("Иван", "Петров")
    manager = fast_devportal.portal.add_user("Мария", "Сидорова")  # not an admin
    ids = add_contacts(fast_devportal, 10_000)
    text, bad = bulk_file(ids)
    upload = tmp_path / "statuses.csv"
    upload.write_text(text, encoding="utf-8")

    page.goto(f"{fast_devportal.url}/app?user=1")
    app = page.frame_locator("#app-frame")
    app.locator("#settings-form").wait_for()
    page.screenshot(path=str(artifacts_dir / "ui-01-settings.png"), full_page=True)

    # --- bulk load: preview with per-row errors, then apply with a real progress bar
    app.locator('#tabs button[data-tab="import"]').click()
    app.locator("#import-file").set_input_files(str(upload))
    app.locator("#import-upload").click()
    summary = app.locator("#import-summary")
    summary.wait_for(timeout=60_000)
    assert "строк 10000" in summary.inner_text()
    assert f"с ошибками {bad}" in summary.inner_text()
    errors = app.locator("#import-errors tbody tr")
    assert errors.count() == bad
    assert "Непонятный" in app.locator("#import-errors").inner_text()
    page.screenshot(path=str(artifacts_dir / "ui-02-import-preview.png"), full_page=True)
    with services.sessions() as session:
        assert session.scalars(select(ImportJob)).one().status == "preview"  # nothing written yet
    with Worker(services) as worker:
        app.locator("#import-apply").click()
        progress = app.locator('#import-progress[data-status="done"]')
        progress.wait_for(timeout=90_000)
    assert not worker.errors
    assert progress.get_attribute("data-percent") == "100"
    page.screenshot(path=str(artifacts_dir / "ui-03-import-done.png"), full_page=True)
    with services.sessions() as session:
        job = session.scalars(select(ImportJob)).one()
        assert (job.status, job.applied_rows) == ("done", 10_000 - bad)

    # --- index the base: the worker reads every client back, the bar follows its progress
    app.locator('#tabs button[data-tab="index"]').click()
    with Worker(services) as worker:
        app.locator("#index-btn").click()
        app.locator('#index-progress[data-status="done"]').wait_for(timeout=90_000)
    assert not worker.errors
    assert app.locator("#index-progress").get_attribute("data-percent") == "100"
    app.locator('#debug-form input[name="entity_id"]').fill(str(ids[0]))
    app.locator('#debug-form button[type="submit"]').click()
    app.locator("#entity-history").wait_for()
    assert "загрузка" in app.locator("#entity-history").inner_text()
    page.screenshot(path=str(artifacts_dir / "ui-03b-index-and-lookup.png"), full_page=True)

    # --- what-if: shorter days for HOT, before saving
    app.locator('#tabs button[data-tab="settings"]').click()
    hot = app.locator('tr[data-code="HOT"]')
    hot.locator('input[name="st_name"]').fill("Очень горячий")
    hot.locator('input[name="st_days"]').fill("10")
    app.locator("#whatif-btn").click()
    app.locator("#whatif-result").wait_for(timeout=30_000)
    assert "Сменят статус" in app.locator("#whatif-result").inner_text()
    page.screenshot(path=str(artifacts_dir / "ui-04-whatif.png"), full_page=True)

    # --- change more settings, including a validation error first
    app.locator("#opt-require_call").check()
    app.locator('input[name="transfer_mode"][value="user"]').check()
    app.locator('select[name="transfer_user_id"]').select_option(label="Иван Петров")
    app.locator('input[name="notify_time"]').fill("25:00")
    app.locator("#save-btn").click()
    app.locator('[data-error-for="notify_time"]').wait_for()
    page.screenshot(path=str(artifacts_dir / "ui-05-settings-error.png"), full_page=True)
    app.locator('input[name="notify_time"]').fill("10:30")
    app.locator("#save-btn").click()
    app.locator("#save-result", has_text="Настройки сохранены").wait_for()
    page.screenshot(path=str(artifacts_dir / "ui-06-settings-saved.png"), full_page=True)
    with services.sessions() as session:
        row = session.get(PortalSettings, portal_id)
        opts = Options.from_dict(row.data)
        assert row.version == 2
        assert (opts.status("HOT").name, opts.status("HOT").days) == ("Очень горячий", 10)
        assert opts.require_call and opts.transfer_mode == "user" and opts.notify_time == "10:30"
        hot_row = session.scalars(select(TrackedEntity).where(TrackedEntity.status == "HOT")).first()
        assert hot_row.due_on == hot_row.status_set_on + dt.timedelta(days=10)  # re-dated

    # --- the portal shows the renamed status; the card tab shows status, dates and history
    page.goto(f"{fast_devportal.url}/crm/contact/details/{hot_row.entity_id}/?user=1")
    assert "Очень горячий" in page.locator("main table").first.inner_text()
    card = page.frame_locator("#app-frame")
    card.locator("#card").wait_for()
    assert "Очень горячий" in card.locator("#entity-status").inner_text()
    assert hot_row.due_on.strftime("%d.%m.%Y") in card.locator("#entity-due").inner_text()
    assert "загрузка" in card.locator("#entity-history").inner_text()
    page.screenshot(path=str(artifacts_dir / "ui-07-card-tab.png"), full_page=True)

    # --- the dashboard
    page.goto(f"{fast_devportal.url}/app?user=1")
    app = page.frame_locator("#app-frame")
    app.locator('#tabs button[data-tab="dashboard"]').click()
    app.locator("#managers-chart svg").wait_for()
    page.screenshot(path=str(artifacts_dir / "ui-08-dashboard.png"), full_page=True)

    # --- a manager (not an admin) gets a read-only page
    page.goto(f"{fast_devportal.url}/app?user={manager}")
    app = page.frame_locator("#app-frame")
    app.locator("#readonly-note").wait_for()
    assert app.locator("#save-btn").count() == 0 and app.locator("#pane-import").count() == 0
    assert app.locator('#settings-form input[name="st_name"]').first.is_disabled()
    page.screenshot(path=str(artifacts_dir / "ui-09-manager-read-only.png"), full_page=True)


def test_a_large_file_is_matched_in_the_background_and_its_preview_opens_by_itself(
        page, services, fast_devportal, app_server, artifacts_dir, tmp_path, monkeypatch):
    """Over INLINE_MATCH_ROWS rows to match by phone, the upload answers at once; the page follows the
    worker's matching with a progress bar and opens the preview when it is done."""
    from addon.bulkload import staging
    from worker import imports

    monkeypatch.setattr(staging, "INLINE_MATCH_ROWS", 10)
    monkeypatch.setattr(imports, "MATCH_CHUNK", 20)
    install_on(services, fast_devportal, app_server, events=False)
    add_contacts(fast_devportal, 120)
    upload = tmp_path / "phones.csv"
    upload.write_text("Телефон;Статус\n" + "".join(f"8 917 000-0{n:03d};Тёплый\n" for n in range(100))
                      + "+7 999 999-99-99;HOT\n", encoding="utf-8")

    page.goto(f"{fast_devportal.url}/app?user=1")
    app = page.frame_locator("#app-frame")
    app.locator('#tabs button[data-tab="import"]').click()
    app.locator("#import-file").set_input_files(str(upload))
    app.locator("#import-upload").click()
    app.locator("#import-matching").wait_for(timeout=30_000)
    assert "строк 101" in app.locator("#import-matching").inner_text()
    page.screenshot(path=str(artifacts_dir / "ui-02b-import-matching.png"), full_page=True)
    with Worker(services) as worker:
        summary = app.locator("#import-summary")
        summary.wait_for(timeout=60_000)
    assert not worker.errors
    assert "готово к загрузке 100, с ошибками 1" in summary.inner_text()
    assert "+79999999999" in app.locator("#import-errors").inner_text()
    page.screenshot(path=str(artifacts_dir / "ui-02c-import-matched-preview.png"), full_page=True)


def test_admin_marks_a_manager_absent_for_the_distribution_robot(
        page, services, fast_devportal, app_server, artifacts_dir):
    from addon.robots.store import absent_users

    portal_id = install_on(services, fast_devportal, app_server, events=False)
    manager = fast_devportal.portal.add_user("Мария", "Сидорова")
    page.goto(f"{fast_devportal.url}/app?user=1")
    app = page.frame_locator("#app-frame")
    app.locator('#tabs button[data-tab="robots"]').click()
    row = app.locator(f'#absent-table tr[data-user="{manager}"]')
    assert "Мария Сидорова" in row.inner_text()
    row.locator('input[type="checkbox"]').check()
    app.locator("#absent-save").click()
    app.locator("#flash").wait_for(timeout=30_000)
    assert "Мария Сидорова" in app.locator("#flash").inner_text()
    assert app.locator(f'#absent-table tr[data-user="{manager}"] input[type="checkbox"]').is_checked()
    page.screenshot(path=str(artifacts_dir / "ui-06-robots-absences.png"), full_page=True)
    with services.sessions() as session:
        assert absent_users(session, portal_id) == {int(manager)}
