"""The robots' world: the app installed on a devportal with a sales department, its head, four
managers (one deactivated) and a frozen portal clock the tests move by hand."""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from addon.models import Portal
from addon.robots.runner import fire_due_timers, process_robot_calls

MSK = ZoneInfo("Europe/Moscow")
START = dt.datetime(2026, 11, 2, 10, 0, tzinfo=MSK)  # a Monday morning


@dataclass
class World:
    services: object
    devportal: object
    app_server: object
    portal_id: int
    head: int
    managers: list[int]
    inactive: int
    department: int

    @property
    def portal(self):
        return self.devportal.portal

    def now(self) -> dt.datetime:
        return self.portal.now()

    def advance(self, **delta) -> dt.datetime:
        return self.portal.advance(**delta)

    def lead(self, title="Лид", phone=None, status="NEW", user=1, **fields) -> int:
        data = {"TITLE": title, "STATUS_ID": status, **fields}
        if phone:
            data["PHONE"] = [{"VALUE": phone, "VALUE_TYPE": "WORK"}]
        return self.portal.act_add("lead", data, user)

    def robot(self, robot: str, document_type: str, entity_id: int, **properties) -> str:
        return self.portal.run_robot(f"nezabyt_{robot}_{document_type}", document_type, entity_id, properties)

    def process(self) -> int:
        return process_robot_calls(self.services, self.portal_id, self.now())

    def fire(self) -> int:
        return fire_due_timers(self.services, self.now())

    def run_for(self, **delta) -> None:
        """Move the clock forward by `delta`, stopping at every moment a robot timer is due and
        firing it there, like a worker that runs every minute."""
        from addon.models import RobotTimer

        end = self.now() + dt.timedelta(**delta)
        while True:
            with self.services.sessions() as s:
                due = s.scalar(select(func.min(RobotTimer.due_at)).where(RobotTimer.status == "waiting"))
            if due is None:
                break
            moment = due.replace(tzinfo=dt.timezone.utc).astimezone(MSK) + dt.timedelta(minutes=1)
            if moment > end:
                break
            if moment > self.now():
                self.portal.set_clock(moment, frozen=True)
            self.fire()
        self.portal.set_clock(end, frozen=True)

    def record(self, entity: str, entity_id: int) -> dict:
        return self.portal.records[entity][entity_id]

    def replies(self, code_part: str = "") -> list[dict]:
        return [r for r in self.portal.robot_replies if code_part in r["code"]]

    def tasks_for(self, entity_binding: str) -> list[dict]:
        return [t for t in self.portal.tasks if entity_binding in t["ufCrmTask"]]

    def messages_to(self, user_id: int) -> list[str]:
        return [n["message"] for n in self.portal.notifications if n["user_id"] == user_id]


@pytest.fixture
def world(services, devportal, app_server) -> World:
    # Functional tests: the portal's rate limit is off and our pace wide open, so they run fast.
    devportal.portal.set_limits(enabled=False)
    services.settings = dataclasses.replace(services.settings, portal_rps=1000.0, portal_burst=1000)
    devportal.portal.set_clock(START, frozen=True)
    p = devportal.portal
    head = p.add_user("Ольга", "Руководова", position="РОП")
    department = p.add_department("Отдел продаж", parent=1, head=head)
    managers = [p.add_user(n, f"Менеджеров{i}", department_id=department)
                for i, n in enumerate(("Иван", "Пётр", "Анна", "Мария"))]
    p.deactivate_user(managers[1])
    s = app_server.services.settings
    answer = p.install_app(app_server.url, s.client_id, s.client_secret)
    assert answer["status_code"] == 200, answer["answer"]
    with services.sessions() as session:
        portal_id = session.scalars(select(Portal.id)).one()
    return World(services, devportal, app_server, portal_id, head, managers, managers[1], department)
