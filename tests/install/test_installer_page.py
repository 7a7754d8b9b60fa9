"""The installer page the admin sees in the portal's frame: «Не забыт» by name, what was set up,
what to do next (naming the settings' real tabs and sections), and a Russian page with the reason
and a next step when the install fails — never a JSON body in the admin's frame."""
from __future__ import annotations

import re

import requests

from install.pages import install_failure_page
from settings_ui.i18n import TEXTS


def _quoted(text: str) -> set[str]:
    return set(re.findall(r"«([^»]+)»", text))


def test_the_installer_page_says_what_was_set_up_and_what_to_do_next(services, devportal, app_server):
    dp = devportal.portal
    s = services.settings
    answer = dp.install_app(app_server.url, s.client_id, s.client_secret)
    assert answer["status_code"] == 200
    page = answer["answer"]
    assert "«Не забыт» установлен" in page and "Nezabyt" not in page
    assert "Что дальше" in page and "installFinish" in page and "Открыть настройки" in page
    assert re.search(r"зарегистрировано: \d+", page)
    # every tab or section the next steps name is one the settings page really has
    ui_names = set(TEXTS["ru"].values())
    named = _quoted(page.split("Что дальше", 1)[1]) - {"Не забыт"}
    assert named and named <= ui_names, named - ui_names

    again = dp.install_app(app_server.url, s.client_id, s.client_secret)
    assert "«Не забыт» готов к работе" in again["answer"]


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}  # the portal's frame


def test_a_failed_install_answers_a_russian_page_with_a_next_step(services, devportal, app_server):
    dp = devportal.portal
    s = services.settings
    dp.install_app(app_server.url, s.client_id, s.client_secret, finish=False)
    manager = dp.add_user("Иван", "Петров")
    answer = requests.post(f"{app_server.url}/install", params=dp.page_query(),
                           data=dp.page_form(dp.issue_tokens(manager), "DEFAULT", {}), headers=BROWSER, timeout=10)
    assert answer.status_code == 403 and answer.headers["Content-Type"].startswith("text/html")
    assert "«Не забыт» не установлен" in answer.text
    assert "только администратор" in answer.text and "Попросите администратора" in answer.text

    broken = requests.post(f"{app_server.url}/install", params=dp.page_query(), data={"member_id": "x"},
                           headers=BROWSER, timeout=10)
    assert broken.status_code == 400 and "Откройте приложение" in broken.text
    # a caller that does not ask for a page (a script, the portal's own checks) still gets JSON
    plain = requests.post(f"{app_server.url}/install", params=dp.page_query(), data={"member_id": "x"}, timeout=10)
    assert plain.status_code == 400 and plain.json()["error"] == "bad_request"


def test_the_failure_page_covers_every_answer_of_the_install():
    for status in (400, 401, 403, 502, 503, 500, 504, 418):
        page = install_failure_page(status, "reason <b>")
        assert "«Не забыт» не установлен" in page and "reason &lt;b&gt;" in page
    assert "через минуту" in install_failure_page(503, "busy")
    assert "Ничего не сохранено" in install_failure_page(502, "ERROR_CORE")
