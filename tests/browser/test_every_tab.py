"""Every tab of the settings page, as an admin and as a manager, at 1280 and 400 px wide: no
English in the Russian page (beyond a short list of technical words), no console error, no link
that leaves the portal for a 404, no element wider than the screen."""
from __future__ import annotations

import datetime as dt
import re

import pytest
import requests

from tests.ui.conftest import add_contacts, add_tracked, install_on, today_msk

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Words a Russian admin reads as they are: formats, products, status codes (all capitals), the
# name of the English language in the language picker.
ALLOWED_LATIN = {"ID", "CSV", "XLSX", "E-mail", "e-mail", "Bitrix24", "CRM", "English", "SVG"}
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z\-]*[A-Za-z]|[A-Za-z]")
TABS_ADMIN = ("settings", "index", "import", "journal", "dashboard", "robots")

# The elements wider than the frame's viewport that are not inside a box that scrolls them.
OVERFLOW_JS = """() => {
  const vw = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (!r.width || r.right <= vw + 1) continue;
    let scrolled = false;
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const ox = getComputedStyle(p).overflowX;
      if ((ox === 'auto' || ox === 'scroll') && p.getBoundingClientRect().right <= vw + 1) { scrolled = true; break; }
    }
    if (!scrolled) out.push(el.tagName + (el.id ? '#' + el.id : '') + (el.className && el.className.baseVal === undefined ? '.' + el.className : '') + ' ' + Math.round(r.right) + '>' + vw);
  }
  return out.slice(0, 10);
}"""

LINKS_JS = """() => Array.from(document.querySelectorAll('a[href]')).filter(a => a.offsetParent !== null || a.closest('.pane.active'))
  .map(a => a.href).filter(h => h.startsWith('http'))"""


def english_words(text: str) -> list[str]:
    text = re.sub(r"\{[a-z_]+\}", " ", text)  # template placeholders are shown as {entity}
    text = re.sub(r"\b[\w.+-]+@[\w.-]+\b", " ", text)  # e-mail addresses
    text = re.sub(r"\S+\.(csv|xlsx)\b", " ", text)  # the admin's own file names
    words = []
    for word in LATIN_WORD.findall(text):
        if word in ALLOWED_LATIN or re.fullmatch(r"[A-Z][A-Z0-9_]*", word):
            continue
        words.append(word)
    return words


@pytest.fixture
def portal_with_data(services, fast_devportal, app_server):
    portal_id = install_on(services, fast_devportal, app_server, events=False)
    dp = fast_devportal.portal
    manager = dp.add_user("Мария", "Сидорова")
    gone = dp.add_user("Пётр", "Ушедший")
    ids = add_contacts(fast_devportal, 6)
    today = today_msk()
    for n, entity_id in enumerate(ids):
        add_tracked(services, portal_id, entity_id, ("HOT", "WARM", "NEW")[n % 3],
                    today - dt.timedelta(days=(28, 58, 8)[n % 3]), assigned=(manager, gone, 1)[n % 3],
                    title=f"Клиент {n}")
    dp.deactivate_user(gone)
    return portal_id, manager, gone, ids


def walk(page, app, devportal, app_server, tab: str, problems: list[str], console: list[str]) -> None:
    app.locator(f'#tabs button[data-tab="{tab}"]').click()
    page.wait_for_timeout(150)
    frame = page.frame(name="app-frame")
    text = frame.evaluate("() => document.querySelector('.pane.active').innerText + ' ' + "
                          "document.querySelector('h1').innerText + ' ' + document.querySelector('#tabs').innerText")
    english = english_words(text)
    if english:
        problems.append(f"{tab}: English words {sorted(set(english))[:20]}")
    wide = frame.evaluate(OVERFLOW_JS)
    if wide:
        problems.append(f"{tab}: wider than the screen: {wide}")
    smallest = frame.evaluate("() => Math.min(1000, ...Array.from(document.querySelectorAll('.pane.active svg text'))"
                              ".map(t => t.getBoundingClientRect().height).filter(h => h > 0))")
    if smallest < 10:
        problems.append(f"{tab}: chart text {smallest:.1f} px high")
    if page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1"):
        problems.append(f"{tab}: the portal page scrolls sideways")
    for href in set(frame.evaluate(LINKS_JS)):
        if not (href.startswith(devportal.url) or href.startswith(app_server.url)):
            problems.append(f"{tab}: a link leaves the portal: {href}")
            continue
        status = requests.get(href, timeout=10).status_code
        if status >= 400:
            problems.append(f"{tab}: {href} answers {status}")
    if console:
        problems.append(f"{tab}: console: {console[:5]}")
        console.clear()


@pytest.mark.parametrize("width", [1280, 400])
def test_every_tab_is_russian_fits_the_screen_and_links_nowhere_dead(
        browser, portal_with_data, services, fast_devportal, app_server, tmp_path, artifacts_dir, width):
    _, manager, gone, ids = portal_with_data
    context = browser.new_context(viewport={"width": width, "height": 900}, locale="ru-RU")
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.text} {msg.location.get('url', '')}")
            if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console.append(str(exc)))
    problems: list[str] = []
    try:
        page.goto(f"{fast_devportal.url}/app?user=1")
        app = page.frame_locator("#app-frame")
        app.locator("#tabs").wait_for()
        for tab in TABS_ADMIN:
            walk(page, app, fast_devportal, app_server, tab, problems, console)
            page.screenshot(path=str(artifacts_dir / f"tabs-{width}-{tab}.png"), full_page=True)
        # buttons in Bitrix24's type: 12 px, semi-bold (an invalid font shorthand gave 13.3 px, 400)
        app.locator('#tabs button[data-tab="settings"]').click()
        font = app.locator("#save-btn").evaluate("b => [getComputedStyle(b).fontSize, getComputedStyle(b).fontWeight]")
        if font != ["12px", "600"]:
            problems.append(f"settings: the save button's font is {font}")
        # the robots tab lists every robot, with the way into a pipeline's automation rules
        from addon.robots.registry import ROBOTS

        app.locator('#tabs button[data-tab="robots"]').click()
        if app.locator("#robot-catalog tbody tr").count() != len(ROBOTS):
            problems.append("robots: not every robot is listed")
        app.locator("#deal-automation").click()
        automation = page.frame_locator("#bx-slider-frame").locator("#robots")
        automation.wait_for(timeout=15_000)
        if "Не забыт: распределить менеджеру" not in automation.inner_text():
            problems.append("robots: the deal automation page does not offer Nezabyt's robots")
        page.locator("#bx-slider .slider-close").click()
        # the template previews read as Russian sentences (no «от Иван Петров»)
        app.locator('#tabs button[data-tab="settings"]').click()
        transfer = app.locator('[data-preview-for="transfer"]').inner_text()
        if "от Иван Петров" in transfer or "Иван Петров" not in transfer:
            problems.append(f"settings: the transfer preview reads {transfer!r}")
        # a bulk load's preview with errors, and its report
        upload = tmp_path / "statuses.csv"
        upload.write_text(f"ID;Статус\n{ids[0]};Горячий\n{ids[1]};Непонятный\nабв;HOT\n", encoding="utf-8")
        app.locator('#tabs button[data-tab="import"]').click()
        app.locator("#import-file").set_input_files(str(upload))
        app.locator("#import-upload").click()
        app.locator("#import-summary").wait_for()
        walk(page, app, fast_devportal, app_server, "import", problems, console)
        page.screenshot(path=str(artifacts_dir / f"tabs-{width}-import-preview.png"), full_page=True)
        # a departed manager is named, and marked
        app.locator('#tabs button[data-tab="dashboard"]').click()
        if "Пётр Ушедший (уволен)" not in app.locator("#managers-table").inner_text() or \
                f"#{gone}" in app.locator("#pane-dashboard").inner_text():
            problems.append("dashboard: the departed manager is not named")
        if app.locator("#changes-chart text.tick").count() < 2 or app.locator("#managers-legend li").count() < 2:
            problems.append("dashboard: a chart without its axis ticks or legend")
        legend = app.locator("#managers-legend li").evaluate_all(
            "items => items.map(i => i.getBoundingClientRect()).map(r => [r.left, r.top, r.right, r.bottom])")
        for n, a in enumerate(legend):
            for b in legend[n + 1:]:
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    problems.append(f"dashboard: legend entries overlap {a} {b}")
        # the manager's own, read-only view
        page.goto(f"{fast_devportal.url}/app?user={manager}")
        app = page.frame_locator("#app-frame")
        app.locator("#readonly-note").wait_for()
        for tab in ("settings", "index", "dashboard", "robots"):
            walk(page, app, fast_devportal, app_server, tab, problems, console)
    finally:
        context.close()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("width", [1280, 400])
def test_the_installer_page_is_russian_fits_the_screen_and_finishes_the_install(
        browser, services, fast_devportal, app_server, width):
    dp = fast_devportal.portal
    s = services.settings
    dp.register_app(app_server.url, s.client_id, s.client_secret, installed=False)
    context = browser.new_context(viewport={"width": width, "height": 900}, locale="ru-RU")
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console.append(str(exc)))
    try:
        page.goto(f"{fast_devportal.url}/app/install")
        app = page.frame_locator("#app-frame")
        app.locator("h1").wait_for()
        assert app.locator("h1").inner_text() == "«Не забыт» установлен"
        page.wait_for_selector("body[data-install-finished='1']", timeout=10000)  # BX24.installFinish()
        frame = page.frame(name="app-frame")
        text = frame.evaluate("() => document.body.innerText")
        assert "Что дальше" in text and not english_words(text), english_words(text)
        assert not frame.evaluate(OVERFLOW_JS)
        assert not page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
        assert console == []
        assert dp.app["installed"]
    finally:
        context.close()
