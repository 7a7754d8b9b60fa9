"""What a robot declaration is made of: the `Robot` record (its name, description, properties and
return values as `bizproc.robot.add` takes them), the property helpers and the robot's CODE."""
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


@dataclass(frozen=True)
class Robot:
    key: str
    name: dict[str, str]
    description: dict[str, str]
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    return_properties: dict[str, dict[str, Any]] = field(default_factory=dict)


def names(ru: str, en: str) -> dict[str, str]:
    return {"ru": ru, "en": en}


def prop(ru: str, en: str, type_: str, required: bool = False, multiple: bool = False,
         default: Any = None, options: dict[str, dict[str, str] | str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"Name": names(ru, en), "Type": type_, "Required": "Y" if required else "N",
                            "Multiple": "Y" if multiple else "N"}
    if default is not None:
        spec["Default"] = default
    if options is not None:
        spec["Options"] = options
    return spec


def pool_properties() -> dict[str, dict[str, Any]]:
    """The distribution pool: shared by the distributing robot and the take-in-work SLA."""
    return {
        "mode": prop("Способ распределения", "Distribution mode", "select", required=True,
                     default="round_robin", options={k: v[0] for k, v in DISTRIBUTION_MODES.items()}),
        "users": prop("Менеджеры", "Managers", "user", multiple=True),
        "departments": prop("Отделы (ID через запятую)", "Departments (IDs, comma separated)", "string"),
        "absent": prop("Отсутствуют (не назначать)", "Absent (never assign)", "user", multiple=True),
        "pool": prop("Имя очереди", "Queue name", "string", default="default"),
    }


def robot_code(key: str, document_type: str) -> str:
    return f"{CODE_PREFIX}{key}_{document_type}"
