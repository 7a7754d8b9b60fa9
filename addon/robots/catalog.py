"""The catalog of Nezabyt's pipeline robots: `bizproc.robot.add` parameters for leads and deals."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CODE_PREFIX = "nezabyt_"
# One registration has one DOCUMENT_TYPE, so each robot is registered once per document type with
# the type in its CODE: nezabyt_<robot>_<lead|deal>.
DOCUMENT_TYPES = {
    "lead": ["crm", "CCrmDocumentLead", "LEAD"],
    "deal": ["crm", "CCrmDocumentDeal", "DEAL"],
}

DISTRIBUTION_MODES = {"round_robin": ("По кругу", "Round robin"),
                      "least_loaded": ("Наименее загруженному", "Least loaded"),
                      "ranking": ("По месячному рейтингу", "Weighted by the monthly ranking")}


def _t(ru: str, en: str) -> dict[str, str]:
    return {"ru": ru, "en": en}


def _prop(ru: str, en: str, type_: str, required: bool = False, multiple: bool = False,
          default: Any = None, options: dict[str, dict[str, str] | str] | None = None) -> dict[str, Any]:
    prop: dict[str, Any] = {"Name": _t(ru, en), "Type": type_, "Required": "Y" if required else "N",
                            "Multiple": "Y" if multiple else "N"}
    if default is not None:
        prop["Default"] = default
    if options is not None:
        prop["Options"] = options
    return prop


def _pool_properties() -> dict[str, dict[str, Any]]:
    """The distribution pool: shared by the distributing robot and the take-in-work SLA."""
    return {
        "mode": _prop("Способ распределения", "Distribution mode", "select", required=True,
                      default="round_robin", options={k: v[0] for k, v in DISTRIBUTION_MODES.items()}),
        "users": _prop("Менеджеры", "Managers", "user", multiple=True),
        "departments": _prop("Отделы (ID через запятую)", "Departments (IDs, comma separated)", "string"),
        "absent": _prop("Отсутствуют (не назначать)", "Absent (never assign)", "user", multiple=True),
        "pool": _prop("Имя очереди", "Queue name", "string", default="default"),
    }


@dataclass(frozen=True)
class Robot:
    key: str
    name: dict[str, str]
    description: dict[str, str]
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    return_properties: dict[str, dict[str, Any]] = field(default_factory=dict)


ROBOTS: tuple[Robot, ...] = (
    Robot("distribute",
          _t("Не забыт: распределить менеджеру", "Nezabyt: distribute to a manager"),
          _t("Назначает ответственного из очереди менеджеров: по кругу, наименее загруженному или по рейтингу; "
             "пропускает уволенных и отсутствующих.",
             "Assigns a manager from a pool: round robin, least loaded or by the monthly ranking; skips "
             "deactivated and absent users."),
          {**_pool_properties(),
           "task_minutes": _prop("Задача связаться с клиентом за (мин., 0 — без задачи)",
                                 "Task to contact the client within (min; 0 = no task)", "int", default=0)},
          {"assigned_user": _prop("Назначенный менеджер", "Assigned manager", "user")}),
    Robot("take_in_work",
          _t("Не забыт: взять в работу за N минут", "Nezabyt: take in work within N minutes"),
          _t("Если ответственный не тронул элемент (дело, комментарий, смена стадии, правка) за N минут, элемент "
             "передаётся следующему менеджеру; сообщения обоим и руководителю; не более K раз.",
             "If the responsible does not touch the item (activity, comment, stage change, edit) in N minutes, it "
             "goes to the next manager; both and the supervisor are told; at most K times."),
          {"minutes": _prop("Минут на реакцию", "Minutes to react", "int", required=True, default=15),
           "max_reassign": _prop("Передавать не более (раз)", "Reassign at most (times)", "int", default=2),
           **_pool_properties()},
          {"sla_met": _prop("Взят в работу вовремя", "Taken in work in time", "bool"),
           "responsible": _prop("Ответственный", "Responsible", "user")}),
    Robot("one_client_per_phone",
          _t("Не забыт: один клиент — один телефон", "Nezabyt: one client per phone"),
          _t("Без телефона — задача ответственному; повторное обращение с известного номера: задача "
             "ответственному клиента или возврат в первую стадию, если ответственный отключён.",
             "No phone: a task to the responsible; a repeat request from a known phone: a task to the "
             "client's responsible, or back to the first stage when that responsible is deactivated."),
          {"first_stage": _prop("Первая стадия (код, пусто — первая в воронке)",
                                "First stage (ID; empty = the pipeline's first)", "string"),
           "ignore_stages": _prop("Не возвращать из стадий (коды через запятую)",
                                  "Never return from stages (IDs, comma separated)", "string")},
          {"duplicate_id": _prop("ID дубля", "Duplicate ID", "int"),
           "duplicate_type": _prop("Тип дубля", "Duplicate type", "string"),
           "outcome": _prop("Результат", "Outcome", "string")}),
    Robot("required_fields",
          _t("Не забыт: обязательные поля стадии", "Nezabyt: required fields before moving on"),
          _t("Проверяет, что поля заполнены; иначе задача ответственному со списком и, если включено, "
             "возврат на предыдущую стадию.",
             "Checks the fields are filled; else a task to the responsible listing what is missing and, if "
             "set, back to the previous stage."),
          {"fields": _prop("Поля (коды)", "Fields (codes)", "string", required=True, multiple=True),
           "send_back": _prop("Вернуть на предыдущую стадию", "Send back to the previous stage", "bool",
                              default="Y"),
           "previous_stage": _prop("Предыдущая стадия (код)", "Previous stage (ID)", "string")},
          {"complete": _prop("Все поля заполнены", "All fields filled", "bool"),
           "missing": _prop("Не заполнены", "Missing", "string")}),
    Robot("close_reason",
          _t("Не забыт: причина закрытия обязательна", "Nezabyt: reason required to close"),
          _t("На проигрышной стадии пустая причина возвращает элемент на предыдущую стадию с сообщением; "
             "причины считаются для отчёта.",
             "On a losing stage an empty reason sends the item back to its previous stage with a message; "
             "reasons are counted for the dashboard."),
          {"reason_field": _prop("Поле причины (код)", "Reason field (code)", "string", required=True),
           "previous_stage": _prop("Предыдущая стадия (код)", "Previous stage (ID)", "string")},
          {"reason": _prop("Причина", "Reason", "string")}),
    Robot("call_cadence",
          _t("Не забыт: график дозвона", "Nezabyt: call-attempt cadence"),
          _t("Задачи позвонить: 1-я неделя через день, 2–4-я два раза в неделю (один в выходной), 5–8-я раз "
             "в неделю, в часы 13–15 и 19–21; до первого состоявшегося звонка; в конце — перевод в стадию.",
             "Call tasks: week 1 every other day, weeks 2–4 twice a week (one at a weekend), weeks 5–8 "
             "weekly, at 13–15 and 19–21; until the first completed call; at the end, a move to a stage."),
          {"final_stage": _prop("Стадия в конце (код, например «На закрытие»)",
                                "Stage at the end (ID, e.g. 'To close')", "string")}),
    Robot("appointment_reminder",
          _t("Не забыт: напомнить перед встречей", "Nezabyt: reminder before an appointment"),
          _t("Задача подтвердить встречу за N рабочих дней до даты из поля; перепланируется при переносе.",
             "A task to confirm N working days before a date field; re-planned when the date moves."),
          {"date_field": _prop("Поле даты (код)", "Date field (code)", "string", required=True),
           "days_before": _prop("За сколько рабочих дней", "Working days before", "int", default=1),
           "title": _prop("Текст задачи", "Task title", "string",
                          default="Подтвердить встречу с клиентом")}),
    Robot("ranking_stage",
          _t("Не забыт: стадия рейтинга", "Nezabyt: ranking stage"),
          _t("Ставится на стадию рейтинга (например «Встреча состоялась»): отмечает, что менеджер провёл "
             "элемент через неё; из рейтинга месяца слабейшие трое получают меньшую долю.",
             "Placed on the ranking stage (e.g. 'Meeting held'): records the manager's conversion; the "
             "weakest three of the month get a smaller share of the next month's distribution."),
          {"share": _prop("Доля слабейших трёх", "Share of the weakest three", "double", default="0.5")}),
    Robot("stage_gate",
          _t("Не забыт: не перепрыгивать стадию", "Nezabyt: no skipping the stage"),
          _t("Возвращает элемент, который не прошёл обязательную стадию.",
             "Sends back an item that skipped a required stage."),
          {"required_stage": _prop("Обязательная стадия (код)", "Required stage (ID)", "string", required=True),
           "previous_stage": _prop("Вернуть в стадию (код)", "Send back to stage (ID)", "string")},
          {"passed": _prop("Стадия пройдена", "Stage passed", "bool")}),
    Robot("stuck_in_stage",
          _t("Не забыт: завис в стадии", "Nezabyt: stuck in stage"),
          _t("Элемент, который дольше N часов в стадии, попадает в ежедневную сводку руководителя.",
             "An item that stays longer than N hours in the stage is listed in the supervisor's daily digest."),
          {"hours": _prop("Часов в стадии", "Hours in the stage", "int", required=True, default=24)}),
)
ROBOTS_BY_KEY = {r.key: r for r in ROBOTS}


def robot_code(key: str, document_type: str) -> str:
    return f"{CODE_PREFIX}{key}_{document_type}"


def parse_robot_code(code: str) -> tuple[str, str] | None:
    """(robot key, document type) of one of our codes, or None for a code we never registered."""
    if not code.startswith(CODE_PREFIX):
        return None
    rest = code[len(CODE_PREFIX):]
    key, _, document_type = rest.rpartition("_")
    if key in ROBOTS_BY_KEY and document_type in DOCUMENT_TYPES:
        return key, document_type
    return None


def robot_definitions(public_url: str, auth_user_id: int | None = None) -> list[dict[str, Any]]:
    """The `bizproc.robot.add` params of every robot for every document type. Each twin carries a
    FILTER that INCLUDEs only its document type (bizproc-robot-add.md), so a designer offers one
    robot of each name, the one whose CODE matches it. `auth_user_id`: whose token the robot's
    calls carry — the admin who installed the app (user 1 may not exist or not be an admin)."""
    base = public_url.rstrip("/")
    result = []
    for document_type, document in DOCUMENT_TYPES.items():
        for robot in ROBOTS:
            code = robot_code(robot.key, document_type)
            params: dict[str, Any] = {
                "CODE": code,
                "HANDLER": f"{base}/robots/{code}",
                "AUTH_USER_ID": int(auth_user_id or 1),
                "NAME": dict(robot.name),
                "DESCRIPTION": dict(robot.description),
                "DOCUMENT_TYPE": list(document),
                "FILTER": {"INCLUDE": [list(document[:2])]},
                "PROPERTIES": {k: dict(v) for k, v in robot.properties.items()},
                # The workflow waits for the reply only where the robot returns values.
                "USE_SUBSCRIPTION": "Y" if robot.return_properties else "N",
            }
            if robot.return_properties:
                params["RETURN_PROPERTIES"] = {k: dict(v) for k, v in robot.return_properties.items()}
            result.append(params)
    return result
