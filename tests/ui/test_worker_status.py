"""The dashboard shows an admin what the worker is doing for this portal (as `nezabyt worker status`)."""
from __future__ import annotations

import datetime as dt

from addon.models import Lease, PortalBudget, utcnow
from tests.factories import make_event, make_job_run

from .conftest import MANAGER_AUTH, open_app, page_token, today_msk


def _section(html: str) -> str:
    assert 'id="worker-status"' in html, "no worker section on the dashboard"
    return html.split('id="worker-status"')[1].split("</table>")[0]


def test_dashboard_shows_the_portals_worker_state(client, services, portal, portal_auth):
    today = today_msk()
    now = utcnow()
    with services.sessions() as session:
        make_event(session, portal, entity_id=5, received_at=now - dt.timedelta(minutes=3),
                   processed_at=dt.datetime(2026, 3, 2, 6, 5, 7))
        make_event(session, portal, entity_id=6)
        make_job_run(session, portal, day=today, status="running", started_at=dt.datetime(2026, 3, 2, 6, 0, 1))
        session.add(PortalBudget(portal_id=portal, plan="ru_ent250", rps=5.0, burst=250, calls=1234,
                                 limited_at=now - dt.timedelta(seconds=10)))
        session.add(Lease(portal_id=portal, kind="cycle", owner="host-a:4242/ab12", expires_at=now + dt.timedelta(minutes=5)))
        session.commit()
    html = client.post("/ui/page", data={"t": page_token(open_app(client)), "tab": "dashboard"}).get_data(as_text=True)
    part = _section(html)
    assert "Работа обработчика" in part
    assert "02.03.2026 09:05:07" in part and "в очереди: 1" in part  # the portal's time (Moscow)
    assert "идёт" in part and "начат 02.03.2026 09:00:01" in part and "закончен —" in part
    assert "cycle: host-a:4242<" in part.replace("</td>", "<") and "ab12" not in part
    # 1234 and the two calls of opening the page (user.current, user.admin): the web draws on the budget too
    assert ">1236 (" in part and "не больше 5 в секунду, запас 250" in part
    assert "лимит запросов портала (503)" in part
    # a manager does not see the worker's state
    mine = client.post("/ui/page", data={"t": page_token(open_app(client, auth=MANAGER_AUTH)),
                                          "tab": "dashboard"}).get_data(as_text=True)
    assert 'id="worker-status"' not in mine


def test_a_portal_the_worker_has_not_touched_says_so(client, services, portal, portal_auth):
    html = client.post("/ui/page", data={"t": page_token(open_app(client)), "tab": "dashboard"}).get_data(as_text=True)
    part = _section(html)
    assert "ещё не было" in part and "никто" in part and "Приостановлен" in part
    assert "<td id=\"ws-parked\">" in part and part.split('id="ws-parked">')[1].strip().startswith("нет")
