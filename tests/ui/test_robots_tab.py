"""The robots tab: the admin marks managers absent for the distribution robot (no command line
needed), everyone sees the month's ranking and the close reasons; a manager cannot mark anyone."""
from __future__ import annotations

import datetime as dt

from werkzeug.datastructures import MultiDict

from addon.robots.store import absent_users, add_record

from .conftest import MANAGER_AUTH, MANAGER_ID, open_app, page_token


NAMES = {1: "Anna Admin", MANAGER_ID: "Мария Сидорова", 8: "Пётр Иванов"}


def test_absences_ranking_and_reasons(client, services, portal, portal_auth, monkeypatch):
    from settings_ui.people import Employee

    monkeypatch.setattr("settings_ui.people.fetch_users",
                        lambda services, portal_id: {uid: Employee(name) for uid, name in NAMES.items()})
    this_month = dt.datetime.now(dt.timezone.utc).replace(day=1, hour=12)
    with services.sessions() as session:
        for n in range(4):  # Мария: 4 given, 3 reached; Пётр: 2 given, 0 reached
            add_record(session, portal, "assigned", f"DEAL_{n}", this_month, user_id=MANAGER_ID)
        for n in (0, 1, 2):
            add_record(session, portal, "reached", f"DEAL_{n}", this_month)
        for n in (10, 11):
            add_record(session, portal, "assigned", f"LEAD_{n}", this_month, user_id=8)
        add_record(session, portal, "assigned", "DEAL_99", this_month - dt.timedelta(days=40), user_id=8)
        for reason in ("Дорого", "Дорого", "Ушёл к конкурентам"):
            add_record(session, portal, "close_reason", "DEAL_5", this_month, value=reason)
        session.commit()

    token = page_token(open_app(client))
    html = client.post("/ui/page", data={"t": token, "tab": "robots"}).get_data(as_text=True)
    assert 'id="pane-robots"' in html and 'id="absent-form"' in html
    ranking = html.split('id="ranking-table"')[1].split("</table>")[0]
    assert ranking.index("Мария Сидорова") < ranking.index("Пётр Иванов")  # 75% before 0%
    assert ">4<" in ranking and ">3<" in ranking and "75%" in ranking and ">2<" in ranking
    reasons = html.split('id="reasons-table"')[1].split("</table>")[0]
    assert reasons.index("Дорого") < reasons.index("Ушёл к конкурентам") and ">2<" in reasons

    # The admin marks Пётр absent, then back; users not shown on the form are left alone.
    with services.sessions() as session:
        from addon.robots.store import mark_absent

        mark_absent(session, portal, 42)  # marked earlier, no longer among the portal's users
        session.commit()
    form = MultiDict([("t", token), ("shown", "1"), ("shown", str(MANAGER_ID)), ("shown", "8"), ("absent", "8")])
    page = client.post("/ui/robots/absences", data=form).get_data(as_text=True)
    assert "Отсутствующие: Пётр Иванов, #42." in page
    assert 'value="8" checked' in page
    with services.sessions() as session:
        assert absent_users(session, portal) == {8, 42}
    form = MultiDict([("t", token), ("shown", "8"), ("shown", "42")])
    client.post("/ui/robots/absences", data=form)
    with services.sessions() as session:
        assert absent_users(session, portal) == set()

    # Another month: nothing given out in it yet.
    past = client.post("/ui/page", data={"t": token, "tab": "robots", "month": "2020-01"}).get_data(as_text=True)
    assert 'id="ranking-empty"' in past and 'value="2020-01"' in past

    # A manager sees the ranking, not the absence form, and cannot post it.
    mine = page_token(open_app(client, auth=MANAGER_AUTH))
    seen = client.post("/ui/page", data={"t": mine, "tab": "robots"}).get_data(as_text=True)
    assert 'id="ranking-table"' in seen and 'id="absent-form"' not in seen
    refused = client.post("/ui/robots/absences", data=MultiDict([("t", mine), ("shown", "8"), ("absent", "8")]))
    assert refused.status_code == 403
    # A mark for a user the form did not show is refused as malformed.
    assert client.post("/ui/robots/absences", data=MultiDict([("t", token), ("absent", "8")])).status_code == 400
