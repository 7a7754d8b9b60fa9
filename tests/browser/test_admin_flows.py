"""The admin's flows inside the devportal's portal page, each finishing where the admin can see it:
client links open in the portal, a save answers next to its button, an unnamed status is refused,
an expired page token is renewed through BX24 (or says how to go on), the frame fits each tab."""
from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import select

from addon.models import PortalSettings
from addon.options import Options
from tests.ui.conftest import add_contacts, add_tracked, install_on, today_msk

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def open_app(page, devportal, user: int = 1):
    page.goto(f"{devportal.url}/app?user={user}")
    app = page.frame_locator("#app-frame")
    app.locator("#tabs").wait_for()
    return app


def in_view(page, locator, timeout: float = 5.0) -> bool:
    """The element is on the admin's screen (Playwright's boxes are in main-frame viewport
    coordinates) once the page has settled."""
    height = page.viewport_size["height"]
    deadline = time.monotonic() + timeout
    while True:
        box = locator.bounding_box()
        if box is not None and box["y"] >= -1 and box["y"] + box["height"] <= height + 1:  # sub-pixel layout
            return True
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(100)


def frame_height(page) -> float:
    return page.locator("#app-frame").bounding_box()["height"]


def content_height(app) -> float:
    return app.locator("body").evaluate("b => b.getBoundingClientRect().height")


def settle_height(page, app, timeout: float = 10.0) -> tuple[float, float]:
    """The frame's and the content's heights once the frame stopped changing."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        now = (frame_height(page), content_height(app))
        if now == last:
            return now
        last = now
        page.wait_for_timeout(150)
    return last


def test_a_client_at_risk_opens_in_the_portal_not_on_the_apps_host(
        page, services, fast_devportal, app_server, artifacts_dir):
    portal_id = install_on(services, fast_devportal, app_server, events=False)
    [contact] = add_contacts(fast_devportal, 1)
    add_tracked(services, portal_id, contact, "HOT", today_msk() - dt.timedelta(days=28), assigned=1,
                title="Клиент под угрозой")
    app = open_app(page, fast_devportal)
    app.locator('#tabs button[data-tab="dashboard"]').click()
    link = app.locator("#at-risk a", has_text="Клиент под угрозой")
    # The fallback address is the portal's own, never the app's host.
    assert link.get_attribute("href") == f"{fast_devportal.url}/crm/contact/details/{contact}/"
    link.click()
    slider = page.frame_locator("#bx-slider-frame")
    slider.locator("h1").wait_for(timeout=15_000)
    assert slider.locator("h1").inner_text() == "Клиент 0"
    assert page.url == f"{fast_devportal.url}/app?user=1"  # the admin is still in the app
    page.screenshot(path=str(artifacts_dir / "flows-01-client-in-slider.png"))
    page.locator("#bx-slider .slider-close").click()
    assert page.locator("#bx-slider").count() == 0


def test_saving_answers_next_to_the_button_and_keeps_the_admins_place(
        page, services, fast_devportal, app_server, artifacts_dir):
    portal_id = install_on(services, fast_devportal, app_server, events=False)
    app = open_app(page, fast_devportal)
    app.locator("#opt-require_call").check()
    app.locator('input[name="notify_time"]').fill("25:00")
    app.locator("#save-btn").click()
    error = app.locator('[data-error-for="notify_time"]')
    error.wait_for()
    result = app.locator("#save-result")
    assert "Время уведомлений" in result.inner_text()  # the field's name, not its key
    assert "notify_time" not in result.inner_text()
    assert in_view(page, result)
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 500  # the save button is far down the form
    assert app.locator("#opt-require_call").is_checked()  # nothing typed is lost

    app.locator('input[name="notify_time"]').fill("10:30")
    app.locator("#save-btn").click()
    app.locator("#save-result", has_text="Настройки сохранены").wait_for()
    assert app.locator('[data-error-for="notify_time"]').count() == 0
    assert in_view(page, result)
    assert in_view(page, app.locator("#save-btn"))  # the admin's place: still at the button
    assert abs(page.evaluate("window.scrollY") - scrolled) < 300
    page.screenshot(path=str(artifacts_dir / "flows-02-saved-next-to-button.png"))
    with services.sessions() as session:
        row = session.get(PortalSettings, portal_id)
        opts = Options.from_dict(row.data)
        assert (row.version, opts.require_call, opts.notify_time) == (2, True, "10:30")


def test_a_new_status_without_a_name_is_a_field_error_not_custom_1(
        page, services, fast_devportal, app_server):
    portal_id = install_on(services, fast_devportal, app_server, events=False)
    app = open_app(page, fast_devportal)
    app.locator("#add-status").click()
    app.locator("#save-btn").click()
    rows = app.locator("#statuses tbody tr")
    new_index = rows.count() - 2  # the added row sits just above LOST
    error = app.locator(f'[data-error-for="statuses.{new_index}.name"]')
    error.wait_for()
    assert error.inner_text() == "у статуса должно быть название"
    assert "новый статус" in app.locator("#save-result").inner_text()
    with services.sessions() as session:
        row = session.get(PortalSettings, portal_id)
        assert row.version == 1 and "CUSTOM_1" not in Options.from_dict(row.data).codes

    # Named, it saves once with a code of its own; a second save keeps that one status.
    rows.nth(new_index).locator('input[name="st_name"]').fill("Остывает")
    app.locator("#save-btn").click()
    app.locator("#save-result", has_text="Настройки сохранены").wait_for()
    app.locator("#save-btn").click()
    app.locator("#save-result", has_text="версия 3").wait_for()
    with services.sessions() as session:
        opts = Options.from_dict(session.get(PortalSettings, portal_id).data)
        assert [s.name for s in opts.statuses].count("Остывает") == 1
        assert opts.status("CUSTOM_1").name == "Остывает"


def test_an_expired_page_is_renewed_through_bx24_without_losing_the_form(
        page, services, fast_devportal, app_server, monkeypatch):
    from settings_ui import pages

    install_on(services, fast_devportal, app_server, events=False)
    app = open_app(page, fast_devportal)
    hot = app.locator('tr[data-code="HOT"]')
    hot.locator('input[name="st_days"]').fill("5")
    issued = app.locator("body").get_attribute("data-token")
    later = time.time() + 3700  # the page token lives an hour
    monkeypatch.setattr(pages, "page_clock", lambda: later)
    calls_before = sum(1 for c in fast_devportal.portal.calls if c["method"] == "user.current")
    app.locator("#whatif-btn").click()
    app.locator("#whatif-result").wait_for(timeout=15_000)
    assert hot.locator('input[name="st_days"]').input_value() == "5"
    # The page asked the portal again who is looking (BX24.refreshAuth, then user.current).
    assert sum(1 for c in fast_devportal.portal.calls if c["method"] == "user.current") > calls_before
    renewed = app.locator('#settings-form input[name="t"]').input_value()
    assert renewed != issued
    # A save with the renewed token goes through.
    app.locator("#save-btn").click()
    app.locator("#save-result", has_text="Настройки сохранены").wait_for()


def test_an_expired_page_the_portal_will_not_renew_says_how_to_go_on(
        page, services, fast_devportal, app_server, monkeypatch):
    from settings_ui import entry, pages
    from settings_ui.access import AccessDenied

    install_on(services, fast_devportal, app_server, events=False)
    app = open_app(page, fast_devportal)
    later = time.time() + 3700
    monkeypatch.setattr(pages, "page_clock", lambda: later)

    def refuse(*args, **kwargs):
        raise AccessDenied("bad_auth")

    monkeypatch.setattr(entry, "verify_user", refuse)
    app.locator('#tabs button[data-tab="index"]').click()
    app.locator("#index-btn").click()
    text = app.locator("#index-progress-text")
    app.locator("#index-progress-text", has_text="Срок действия страницы истёк").wait_for(timeout=15_000)
    assert "Откройте приложение заново" in text.inner_text()
    assert "В очереди" not in text.inner_text()
    assert app.locator("#page-problem").is_visible()
    assert not app.locator("#index-btn").is_disabled()  # the admin can try again


def test_the_frame_fits_each_tab(page, services, fast_devportal, app_server):
    install_on(services, fast_devportal, app_server, events=False)
    app = open_app(page, fast_devportal)
    tall, content = settle_height(page, app)
    assert abs(tall - content) <= 2 and tall > 1500
    app.locator('#tabs button[data-tab="index"]').click()
    short, content = settle_height(page, app)
    assert abs(short - content) <= 2, (short, content)
    assert short < 1000
    app.locator('#tabs button[data-tab="settings"]').click()
    again, _ = settle_height(page, app)
    assert abs(again - tall) <= 2
