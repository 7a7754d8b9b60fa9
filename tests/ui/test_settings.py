"""The settings form: every option round-trips, errors come back next to their fields, saving
bumps the version and re-dates the service table; the what-if preview; lookup; card tab."""
from __future__ import annotations

import datetime as dt
import json

from addon.models import PortalSettings, TrackedEntity
from addon.options import Options, StatusDef
from tests.factories import make_history, make_job_run

from .conftest import ADMIN_AUTH, MANAGER_AUTH, MANAGER_ID, MEMBER_ID, add_tracked, open_app, page_token, today_msk


def settings_form(opts: Options, token: str) -> list[tuple[str, str]]:
    """The form exactly as the page submits it for `opts`."""
    from settings_ui.settings_form import BOOL_OPTIONS, INT_OPTIONS, TEXT_OPTIONS, settings_view

    view = settings_view(opts)
    form = [("t", token)]
    form += [("entity_types", et) for et in view["entity_types"]]
    form += [(k, "on") for k in BOOL_OPTIONS if view[k]]
    form += [(k, str(view[k])) for k in INT_OPTIONS + TEXT_OPTIONS]
    form += [("transfer_user_id", str(view["transfer_user_id"] or ""))]
    form += [("transfer_pool", str(u)) for u in view["transfer_pool"]]
    for s in view["statuses"]:
        form += [("st_code", s["code"]), ("st_name", s["name"]),
                 ("st_days", "" if s["days"] is None else str(s["days"])),
                 ("st_warn_days", "" if s["warn_days"] is None else str(s["warn_days"])),
                 ("st_reasons", s["reasons_text"])]
    form += [(f"tpl_{k}", v) for k, v in view["templates"].items()]
    return form


def post(client, url, form):
    from werkzeug.datastructures import MultiDict

    return client.post(url, data=MultiDict(form))


def test_every_option_round_trips(client, services, portal, portal_auth):
    token = page_token(open_app(client))
    wanted = Options(
        entity_types=("company",),
        statuses=(StatusDef("NEW", "Новенький", True, 12, 2), StatusDef("IN_WORK", "В деле", True),
                  StatusDef("WARM", "Тёплый", days=45, warn_days=5, reasons=("Перезвонить",)),
                  StatusDef("HOT", "Горячий", days=20), StatusDef("SLEEPY", "Сонный", days=100),
                  StatusDef("LOST", "Потерян", True, reasons=("Ушёл к конкуренту", "Закрылся"))),
        reset_on_calls=False, require_call=True, call_lookback_days=5, default_warn_days=4, notify_time="10:30",
        time_zone="Asia/Yekaterinburg", merge_notifications=False, new_for_new_entities=False,
        timeline_comments=True, feed_post=True, feed_post_days=7, open_to_all_on_loss=True, transfer_mode="pool",
        transfer_pool=(3, 5), notify_manager_on_loss=False, notify_supervisor_on_loss=True, language="en",
        templates={"warning": "Call {entity} before {due_date}!"})
    response = post(client, "/ui/settings", settings_form(wanted, token))
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    assert "Настройки сохранены (версия 2)" in response.get_data(as_text=True)
    with services.sessions() as session:
        row = session.get(PortalSettings, portal)
        assert row.version == 2 and row.updated_by == 1
        assert Options.from_dict(row.data) == wanted


def test_new_custom_status_gets_a_code_and_deleting_one_works(client, services, portal, portal_auth):
    token = page_token(open_app(client))
    form = settings_form(Options(time_zone="Europe/Moscow"), token)
    # The browser drops the COLD row and adds a new one before LOST.
    cold = form.index(("st_code", "COLD"))
    del form[cold:cold + 5]
    lost = form.index(("st_code", "LOST"))
    form[lost:lost] = [("st_code", ""), ("st_name", "Ледяной"), ("st_days", "120"), ("st_warn_days", ""),
                       ("st_reasons", "")]
    assert post(client, "/ui/settings", form).status_code == 200
    with services.sessions() as session:
        opts = Options.from_dict(session.get(PortalSettings, portal).data)
    assert opts.custom_chain == ("HOT", "WARM", "CUSTOM_1")
    assert opts.status("CUSTOM_1").name == "Ледяной" and opts.next_status("CUSTOM_1") == "LOST"


def test_errors_are_shown_next_to_their_fields(client, services, portal, portal_auth):
    token = page_token(open_app(client))
    form = settings_form(Options(time_zone="Europe/Moscow"), token)
    form = [(k, v) for k, v in form if k != "entity_types"]
    form = [(k, {"notify_time": "9 утра", "time_zone": "Mars/Olympus"}.get(k, v)) for k, v in form]
    hot_days = form.index(("st_code", "HOT")) + 2
    form[hot_days] = ("st_days", "0")
    form.append(("tpl_decay", "Клиент {entity} {oops}"))
    form = [(k, v) for k, v in form if k != "tpl_decay"] + [("tpl_decay", "Клиент {entity} {oops}")]
    response = post(client, "/ui/settings", form)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    for key, words in (("entity_types", "выберите контакты"), ("notify_time", "ЧЧ:ММ"),
                       ("time_zone", "часовой пояс"), ("statuses.2.days", "от 1 до 3650"),
                       ("templates.decay", "подстановка")):
        assert f'data-error-for="{key}"' in html, key
        assert words in html, words
    assert 'value="9 утра"' in html  # what the admin typed stays in the form
    with services.sessions() as session:
        assert session.get(PortalSettings, portal).version == 1


def test_saving_new_days_redates_the_service_table(client, services, portal, portal_auth):
    today = today_msk()
    add_tracked(services, portal, 1, "HOT", today - dt.timedelta(days=5))
    token = page_token(open_app(client))
    opts = Options(time_zone="Europe/Moscow")
    faster = Options.from_dict({**opts.to_dict(), "statuses": [
        dict(s.to_dict(), days=10) if s.code == "HOT" else s.to_dict() for s in opts.statuses]})
    assert post(client, "/ui/settings", settings_form(faster, token)).status_code == 200
    with services.sessions() as session:
        row = session.query(TrackedEntity).one()
        assert row.due_on == today + dt.timedelta(days=5)


def test_whatif_preview_counts_by_status_and_manager(client, services, portal, portal_auth):
    today = today_msk()
    for i in range(3):
        add_tracked(services, portal, 100 + i, "HOT", today - dt.timedelta(days=20), assigned=MANAGER_ID)
    add_tracked(services, portal, 200, "WARM", today - dt.timedelta(days=20), assigned=8)
    add_tracked(services, portal, 300, "HOT", today - dt.timedelta(days=1), assigned=8)
    token = page_token(open_app(client))
    opts = Options(time_zone="Europe/Moscow")
    shorter = Options.from_dict({**opts.to_dict(), "statuses": [
        dict(s.to_dict(), days=15) if s.code in ("HOT", "WARM") else s.to_dict() for s in opts.statuses]})
    response = post(client, "/ui/settings/preview", settings_form(shorter, token))
    assert response.status_code == 200
    html = response.get_json()["html"]
    assert "Сменят статус: 4" in html
    assert "Горячий" in html and "Тёплый" in html and "#7" in html and "#8" in html
    with services.sessions() as session:  # a preview saves nothing
        assert session.get(PortalSettings, portal).version == 1


def test_debug_lookup_and_card_tab_show_row_and_history(client, services, portal, portal_auth):
    today = today_msk()
    add_tracked(services, portal, 55, "WARM", today - dt.timedelta(days=3), title="ООО Ромашка")
    with services.sessions() as session:
        make_history(session, portal, 55, "HOT", "WARM", today - dt.timedelta(days=3))
        session.commit()
    token = page_token(open_app(client))
    html = client.post("/ui/debug", data={"t": token, "entity_type": "contact", "entity_id": "55"}).get_json()["html"]
    assert "Тёплый" in html and "истёк срок" in html and 'id="entity-due"' in html
    # the manager sees their own client; another's is hidden
    manager = page_token(open_app(client, auth=MANAGER_AUTH))
    assert "Тёплый" in client.post("/ui/debug", data={"t": manager, "entity_type": "contact",
                                                       "entity_id": "55"}).get_json()["html"]
    card = client.post("/placement/CRM_CONTACT_DETAIL_TAB?DOMAIN=acme.bitrix24.ru&PROTOCOL=1&LANG=ru",
                       data={"AUTH_ID": MANAGER_AUTH, "member_id": MEMBER_ID, "PLACEMENT": "CRM_CONTACT_DETAIL_TAB",
                             "PLACEMENT_OPTIONS": json.dumps({"ID": "55"})})
    assert card.status_code == 200
    text = card.get_data(as_text=True)
    assert "Тёплый" in text and (today - dt.timedelta(days=3)).strftime("%d.%m.%Y") in text
    assert "истёк срок" in text


def test_dashboard_counts_and_at_risk(client, services, portal, portal_auth):
    today = today_msk()
    add_tracked(services, portal, 1, "HOT", today - dt.timedelta(days=28), assigned=MANAGER_ID, title="Скоро")
    add_tracked(services, portal, 2, "WARM", today, assigned=MANAGER_ID)
    add_tracked(services, portal, 3, "HOT", today, assigned=8)
    with services.sessions() as session:
        make_history(session, portal, 9, "COLD", "LOST", today, assigned_by_id=MANAGER_ID)
        session.commit()
        make_job_run(session, portal, day=today, status="done", summary={"transfers": 2})
        session.commit()
    from settings_ui.dashboard import build_dashboard

    with services.sessions() as session:
        board = build_dashboard(session, portal, Options(time_zone="Europe/Moscow"), today)
        assert (board.changes["losses"][-1], board.changes["transfers"][-1]) == (1, 2)
        assert {m.manager_id: m.total for m in board.managers} == {MANAGER_ID: 2, 8: 1}
    html = client.post("/ui/page", data={"t": page_token(open_app(client)), "tab": "dashboard"}).get_data(as_text=True)
    assert 'id="managers-chart"' in html and "<svg" in html
    assert 'id="at-risk-count">1<' in html and "Скоро" in html
    assert "Пропали: 1" not in html and "Пропали" in html
    # a manager's own view shows only their clients
    mine = client.post("/ui/page", data={"t": page_token(open_app(client, auth=MANAGER_AUTH)),
                                          "tab": "dashboard"}).get_data(as_text=True)
    assert "#8" not in mine.split('id="managers-table"')[1].split("</table>")[0]


def test_company_card_tab_of_an_untracked_company(client, portal, portal_auth):
    response = client.post("/placement/crm_company_detail_tab?DOMAIN=acme.bitrix24.ru&PROTOCOL=1&LANG=en",
                           data={"AUTH_ID": ADMIN_AUTH, "member_id": MEMBER_ID, "PLACEMENT": "CRM_COMPANY_DETAIL_TAB",
                                 "PLACEMENT_OPTIONS": json.dumps({"ID": "12", "URI": "/crm/company/details/12/"})})
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "Company 12" in text and "not in the service table" in text and "No status changes yet." in text
    assert client.post("/placement/CRM_DEAL_DETAIL_TAB", data={"AUTH_ID": ADMIN_AUTH,
                                                               "member_id": MEMBER_ID}).status_code == 404
