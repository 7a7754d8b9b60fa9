"""`nezabyt demo` in serving mode, as a new user tries it: the settings page inside the demo portal,
where a re-index and a bulk load queued from the page are finished by the demo's worker (the
worker's own schedule), not left «В очереди…»."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from addon.engine import STATUS_FIELD
from demo.config import DemoConfig
from demo.month import run_demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def serving_demo(services):
    config = DemoConfig(contacts=120, companies=20, managers=4, departments=2, days=2, seed=5,
                        database_url=services.settings.database_url, last_day=dt.date(2026, 3, 31),
                        calls_per_manager=3, changes_per_day=4, deals_per_day=2, new_clients_per_day=1)
    lines: list[str] = []
    demo, _ = run_demo(config, lines.append)
    stop = threading.Event()
    serving = threading.Thread(target=demo.serve, kwargs={"speed": 20.0, "stop": stop}, daemon=True)
    serving.start()
    yield demo, lines
    stop.set()
    serving.join(timeout=60)
    demo.close()
    assert not serving.is_alive()


def test_reindex_and_bulk_load_queued_in_the_demo_finish(page, serving_demo, tmp_path, artifacts_dir):
    demo, lines = serving_demo
    dp = demo.srv.portal
    contact = min(dp.records["contact"])
    page.goto(f"{demo.srv.url}/app?user=1")
    app = page.frame_locator("#app-frame")
    app.locator("#tabs").wait_for()

    app.locator('#tabs button[data-tab="index"]').click()
    app.locator("#index-btn").click()
    app.locator('#index-progress[data-status="done"]').wait_for(timeout=60_000)
    assert app.locator("#index-progress").get_attribute("data-percent") == "100"

    upload = tmp_path / "statuses.csv"
    upload.write_text(f"ID;Статус\n{contact};Холодный\n", encoding="utf-8")
    app.locator('#tabs button[data-tab="import"]').click()
    app.locator("#import-file").set_input_files(str(upload))
    app.locator("#import-upload").click()
    app.locator("#import-apply").click()
    app.locator('#import-progress[data-status="done"]').wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts_dir / "demo-01-bulk-load-done.png"))
    items = demo._items("contact")
    assert str(dp.records["contact"][contact][STATUS_FIELD]) == str(items["COLD"])
    assert any("queued-jobs" in line and "jobs 1" in line for line in lines)
