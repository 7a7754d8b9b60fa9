"""The «Журнал» tab in Chromium at 1280 and 400 px, inside the devportal's portal page: a real daily
run is an entry; its drill-down opens, the undo is confirmed, the worker runs it while the page
follows its progress, and the result with the refused client is shown — all in Russian, without a
console error, nothing wider than the screen."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from addon.engine import STATUS_FIELD
from addon.models import PortalSettings, utcnow
from tests.browser.test_every_tab import OVERFLOW_JS, english_words
from tests.ui.conftest import add_contacts, add_tracked, install_on, today_msk

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _check(page, frame, where: str, problems: list[str]) -> None:
    text = frame.evaluate("() => document.querySelector('.pane.active').innerText")
    if english_words(text):
        problems.append(f"{where}: English words {sorted(set(english_words(text)))[:20]}")
    wide = frame.evaluate(OVERFLOW_JS)
    if wide:
        problems.append(f"{where}: wider than the screen: {wide}")
    if page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1"):
        problems.append(f"{where}: the portal page scrolls sideways")


@pytest.mark.parametrize("width", [1280, 400])
def test_the_journal_shows_a_run_and_undoes_it(browser, services, fast_devportal, app_server, artifacts_dir, width):
    from worker.daily import run_daily
    from worker.jobs import run_queued_jobs

    portal_id = install_on(services, fast_devportal, app_server, events=False)
    dp = fast_devportal.portal
    manager = dp.add_user("Мария", "Сидорова")
    ids = add_contacts(fast_devportal, 3)
    for n, entity_id in enumerate(ids):
        add_tracked(services, portal_id, entity_id, "HOT", today_msk() - dt.timedelta(days=31), assigned=manager,
                    title=f"Клиент {n}")
        dp.records["contact"][entity_id]["ASSIGNED_BY_ID"] = str(manager)
    run_daily(services, portal_id, utcnow())
    with services.sessions() as session:
        items = session.get(PortalSettings, portal_id).field_items["contact"]
    assert all(str(dp.records["contact"][i][STATUS_FIELD]) == items["WARM"] for i in ids)
    dp.records["contact"][ids[2]][STATUS_FIELD] = items["COLD"]  # a manager changed it since

    context = browser.new_context(viewport={"width": width, "height": 900}, locale="ru-RU")
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console.append(str(exc)))
    problems: list[str] = []
    try:
        page.goto(f"{fast_devportal.url}/app?user=1")
        app = page.frame_locator("#app-frame")
        app.locator('#tabs button[data-tab="journal"]').click()
        frame = page.frame(name="app-frame")
        entry = app.locator("#journal tr.journal-entry").first
        assert "Ежедневный запуск за" in entry.inner_text()
        _check(page, frame, "journal", problems)
        entry.locator("[data-journal-run]").click()
        app.locator("#journal-changes").wait_for()
        assert app.locator("#journal-changes tbody tr").count() == 3
        assert "Мария Сидорова" in app.locator("#journal-managers").inner_text()
        _check(page, frame, "journal entry", problems)
        app.locator("#undo-btn").click()
        app.locator("#undo-confirm").wait_for()
        _check(page, frame, "undo confirm", problems)
        page.screenshot(path=str(artifacts_dir / f"journal-{width}-confirm.png"), full_page=True)
        app.locator("#undo-go").click()
        app.locator("#undo-progress[data-status]").wait_for(timeout=10_000)
        # The worker picks the queued undo up while the page follows it.
        worker = threading.Thread(target=run_queued_jobs, args=(services, utcnow()))
        worker.start()
        worker.join(30)
        app.locator("#undo-result").wait_for(timeout=15_000)
        result = app.locator("#undo-result").inner_text()
        assert "возвращено 2, отказано 1" in result, result
        app.locator("#undo-show-refused").click()
        app.locator('#journal-changes tr[data-undo="refused"]').wait_for()
        assert "статус с тех пор изменён" in app.locator("#journal-changes").inner_text()
        _check(page, frame, "undo result", problems)
        page.screenshot(path=str(artifacts_dir / f"journal-{width}-undone.png"), full_page=True)
        if console:
            problems.append(f"console: {console[:5]}")
    finally:
        context.close()
    assert [str(dp.records["contact"][i][STATUS_FIELD]) for i in ids] == [items["HOT"], items["HOT"], items["COLD"]]
    assert not problems, "\n".join(problems)
