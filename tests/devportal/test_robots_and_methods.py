"""Robots and bizproc.event.send; notifications, feed, tasks, timeline, options, users and departments."""
from __future__ import annotations

import requests

from tests.devportal.conftest import rest


def _add_robot(srv, token, peer, code="nezabyt_distribute"):
    return rest(srv, "bizproc.robot.add", token, CODE=code, HANDLER=f"{peer.url}/robots/{code}",
                AUTH_USER_ID=1, NAME={"ru": "Распределить"}, USE_SUBSCRIPTION="Y",
                PROPERTIES={"manager": {"Name": "Менеджер", "Type": "user"},
                            "minutes": {"Name": "Минуты", "Type": "int"}},
                RETURN_PROPERTIES={"assigned": {"Name": "Назначен", "Type": "user"}},
                DOCUMENT_TYPE=["crm", "CCrmDocumentDeal", "DEAL"])


# doc: api-reference/bizproc/bizproc-robot/bizproc-robot-add.md ; bizproc-robot-list.md ; bizproc-robot-delete.md
def test_robot_registration(installed):
    srv, answer, peer = installed
    token = answer["access_token"]
    assert _add_robot(srv, token, peer).json()["result"] is True
    again = _add_robot(srv, token, peer).json()
    assert again["error"] == "ERROR_ACTIVITY_ALREADY_INSTALLED"
    assert rest(srv, "bizproc.robot.list", token).json()["result"] == ["nezabyt_distribute"]
    assert rest(srv, "bizproc.robot.update", token, CODE="nezabyt_distribute",
                FIELDS={"NAME": "Распределить лид"}).json()["result"] is True
    assert srv.portal.robots["nezabyt_distribute"]["NAME"] == "Распределить лид"
    assert rest(srv, "bizproc.robot.delete", token, CODE="nezabyt_distribute").json()["result"] is True
    assert rest(srv, "bizproc.robot.list", token).json()["result"] == []


# doc: api-reference/bizproc/bizproc-robot/bizproc-robot-add.md (handler POST) ; bizproc-event-send.md
def test_run_robot_posts_documented_form_and_reply_once(installed):
    srv, answer, peer = installed
    token = answer["access_token"]
    _add_robot(srv, token, peer)
    deal = srv.portal.act_add("deal", {"TITLE": "Окна"})
    event_token = srv.portal.run_robot("nezabyt_distribute", "deal", deal, {"manager": 3, "minutes": 15})
    form = peer.posts("/robots/nezabyt_distribute")[0]
    assert form["code"] == "nezabyt_distribute" and form["event_token"] == event_token
    assert [form[f"document_id[{i}]"] for i in range(3)] == ["crm", "CCrmDocumentDeal", f"DEAL_{deal}"]
    assert [form[f"document_type[{i}]"] for i in range(3)] == ["crm", "CCrmDocumentDeal", "DEAL"]
    assert form["properties[manager]"] == "user_3" and form["properties[minutes]"] == "15"
    assert form["use_subscription"] == "Y" and form["workflow_id"] and form["ts"].isdigit()
    assert form["auth[refresh_token]"] and form["auth[access_token]"]
    assert form["auth[application_token]"] == answer["application_token"]
    reply = rest(srv, "bizproc.event.send", form["auth[access_token]"], event_token=event_token,
                 return_values={"assigned": "user_3"}, log_message="назначен")
    assert reply.json()["result"] is True
    assert srv.portal.robot_replies[0]["return_values"] == {"assigned": "user_3"}
    used = rest(srv, "bizproc.event.send", token, event_token=event_token, return_values={})
    assert used.status_code == 403 and used.json()["error"] == "ACCESS_DENIED"


def test_stage_robot_runs_when_a_deal_enters_the_stage(installed):
    srv, answer, peer = installed
    _add_robot(srv, answer["access_token"], peer)
    srv.portal.bind_stage_robot("deal", "PREPARATION", "nezabyt_distribute", {"minutes": 30})
    deal = srv.portal.act_add("deal", {"TITLE": "Двери"})
    srv.portal.act_move_stage("deal", deal, "PREPARATION")
    srv.portal.act_update("deal", deal, {"TITLE": "Двери и окна"})  # same stage: no second run
    assert srv.portal.wait_for_deliveries()
    posts = peer.posts("/robots/nezabyt_distribute")
    assert len(posts) == 1 and posts[0]["document_id[2]"] == f"DEAL_{deal}"
    assert posts[0]["properties[minutes]"] == "30"


# doc: api-reference/chats/notifications/im-notify-system-add.md ; log/log-blogpost-add.md ; tasks/tasks-task-add.md
def test_notifications_feed_tasks_timeline(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    first = rest(srv, "im.notify.system.add", token, USER_ID=2, MESSAGE="Клиент скоро остынет", TAG="digest|2")
    assert isinstance(first.json()["result"], int)
    rest(srv, "im.notify.system.add", token, USER_ID=2, MESSAGE="Сводка обновлена", TAG="digest|2")
    assert [n["message"] for n in srv.portal.notifications] == ["Сводка обновлена"]  # same TAG replaces
    assert rest(srv, "im.notify.personal.add", token, USER_ID=2).json()["error"] == "MESSAGE_EMPTY"
    assert rest(srv, "im.notify.system.add", token, MESSAGE="x").json()["error"] == "USER_ID_EMPTY"
    post = rest(srv, "log.blogpost.add", token, POST_MESSAGE="Скоро остынут: 3", DEST=["U2"]).json()["result"]
    assert srv.portal.blog_posts[0]["id"] == post and srv.portal.blog_posts[0]["dest"] == ["U2"]
    task = rest(srv, "tasks.task.add", token, fields={"TITLE": "Позвонить", "RESPONSIBLE_ID": 2,
                                                      "UF_CRM_TASK": ["C_5"]}).json()["result"]["task"]
    assert task["id"] == "1" and task["responsibleId"] == "2" and task["ufCrmTask"] == ["C_5"]
    cid = srv.portal.act_add("contact", {"NAME": "Т"})
    comment = rest(srv, "crm.timeline.comment.add", token,
                   fields={"ENTITY_ID": cid, "ENTITY_TYPE": "contact", "COMMENT": "Статус: Горячий"}).json()
    assert isinstance(comment["result"], int)
    upper = rest(srv, "crm.timeline.comment.add", token,
                 FIELDS={"ENTITY_ID": cid, "ENTITY_TYPE": "contact", "COMMENT": "x"})
    assert upper.json()["error"] == "ERROR_ARGUMENT"  # this method needs lowercase `fields`
    listed = rest(srv, "crm.timeline.comment.list", token, filter={"ENTITY_ID": cid, "ENTITY_TYPE": "contact"})
    assert [c["COMMENT"] for c in listed.json()["result"]] == ["Статус: Горячий"]
    todo = rest(srv, "crm.activity.todo.add", token, ownerTypeId=3, ownerId=cid, deadline="2025-01-10T10:00:00",
                title="Перезвонить", responsibleId=2).json()["result"]
    assert set(todo) == {"id"} and srv.portal.activities[todo["id"]]["PROVIDER_ID"] == "CRM_TODO"


# doc: api-reference/common/settings/app-option-set.md ; app-option-get.md
def test_options_need_admin_to_set(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    assert rest(srv, "app.option.get", token).json()["result"] == []
    assert rest(srv, "app.option.set", token, options={"ladder": "{\"v\":1}", "tz": "Europe/Moscow"}).json()[
        "result"] is True
    assert rest(srv, "app.option.get", token, option="tz").json()["result"] == "Europe/Moscow"
    uid = srv.portal.add_user("Олег", "Рядовой", department_id=1)
    user_token = srv.portal.issue_tokens(uid)["access_token"]
    denied = rest(srv, "app.option.set", user_token, options={"tz": "UTC"})
    assert denied.status_code == 403 and denied.json()["error"] == "ACCESS_DENIED"
    assert rest(srv, "user.admin", user_token).json()["result"] is False
    assert rest(srv, "app.option.get", user_token).json()["result"]["tz"] == "Europe/Moscow"


# doc: api-reference/user/user-get.md ; api-reference/departments/department-get.md
def test_users_and_departments_from_seed(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    summary = srv.portal.seed(departments=3, managers=12, contacts=20, companies=5, rng_seed=3)
    deps = rest(srv, "department.get", token).json()
    assert deps["total"] == 4 and deps["result"][0] == {"ID": "1", "NAME": "Компания", "SORT": "500",
                                                        "UF_HEAD": "1"}
    child = deps["result"][1]
    assert child["PARENT"] == "1" and child["UF_HEAD"] == str(summary["manager_ids"][0])
    users = rest(srv, "user.get", token, FILTER={"UF_DEPARTMENT": child["ID"]}).json()["result"]
    assert users and all(int(child["ID"]) in u["UF_DEPARTMENT"] for u in users)
    assert all(isinstance(u["ACTIVE"], bool) for u in users)
    everyone = rest(srv, "user.get", token).json()
    inactive = rest(srv, "user.get", token, FILTER={"ACTIVE": False}).json()["result"]
    assert everyone["total"] == 13 and inactive and all(u["ACTIVE"] is False for u in inactive)
    dead = srv.portal.issue_tokens(int(inactive[0]["ID"]))["access_token"]
    assert rest(srv, "profile", dead).json()["error"] == "authorization_error"


def test_control_api_over_http(installed):
    srv, answer, peer = installed
    base = f"{srv.url}/_dev"
    assert requests.post(f"{base}/set-clock", json={"dt": "2025-02-03T09:00:00+03:00", "frozen": True}).ok
    assert requests.get(f"{base}/clock").json()["now"] == "2025-02-03T09:00:00+03:00"
    requests.post(f"{base}/advance", json={"days": 2})
    assert requests.get(f"{base}/clock").json()["now"] == "2025-02-05T09:00:00+03:00"
    seeded = requests.post(f"{base}/seed", json={"contacts": 30, "companies": 4, "managers": 3,
                                                 "departments": 1}).json()["result"]
    assert seeded["contacts"] == 30 and seeded["calls"] > 0
    cid = requests.post(f"{base}/act-add", json={"entity": "contact", "fields": {"NAME": "Ctl"}}).json()["result"]
    requests.post(f"{base}/act-call", json={"owner_type": "contact", "owner_id": cid, "user_id": 1})
    rest(srv, "profile", answer["access_token"])
    calls = requests.get(f"{base}/calls").json()
    assert calls[-1]["method"] == "profile" and calls[-1]["time"].startswith("2025-02-05T09:00:00")
    requests.post(f"{base}/expire-tokens", json={})
    assert rest(srv, "profile", answer["access_token"]).json()["error"] == "expired_token"
    requests.post(f"{base}/set-limits", json={"enabled": True, "rps": 2, "burst": 1})
    state = requests.get(f"{base}/state").json()
    assert state["limits"]["burst"] == 1 and state["counts"]["contact"] == 31
    assert "client_secret" not in state["app"]
    bad = requests.post(f"{base}/act-update", json={"entity": "contact"})
    assert bad.status_code == 400
    assert requests.get(f"{base}/nothing").status_code == 404
