"""Robot `one_client_per_phone`: an item without a phone gets a task; a repeat request from a known
phone goes to the known client's manager, or back to the first stage when nobody active owns it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from addon.models import Portal
from addon.phones import multifield_phones, normalize_phones, phone_region_for
from addon.robots import logic
from addon.robots.calls import STAGE_FIELD, TASK_PREFIX, RobotCall, as_int, prop_list, prop_str
from addon.robots.robot import Robot, names, prop
from addon.robots.texts import item_link

if TYPE_CHECKING:  # the web's receiver reads the robots' registry; the portal client loads only in the worker
    from addon.robots.run import Run

ROBOT = Robot(
    "one_client_per_phone",
    names("Не забыт: один клиент — один телефон", "Nezabyt: one client per phone"),
    names("Без телефона — задача ответственному; повторное обращение с известного номера: задача "
          "ответственному клиента или возврат в первую стадию, если ответственный отключён.",
          "No phone: a task to the responsible; a repeat request from a known phone: a task to the "
          "client's responsible, or back to the first stage when that responsible is deactivated."),
    {"first_stage": prop("Первая стадия (код, пусто — первая в воронке)",
                         "First stage (ID; empty = the pipeline's first)", "string"),
     "ignore_stages": prop("Не возвращать из стадий (коды через запятую)",
                           "Never return from stages (IDs, comma separated)", "string")},
    {"duplicate_id": prop("ID дубля", "Duplicate ID", "int"),
     "duplicate_type": prop("Тип дубля", "Duplicate type", "string"),
     "outcome": prop("Результат", "Outcome", "string")},
)


def _document_phones(run: Run, call: RobotCall, item: dict) -> tuple[list[str], set[tuple[str, int]]]:
    """The item's normalised phones and the CRM records that are the item itself (never its duplicate)."""
    own: set[tuple[str, int]] = {(call.document_type.upper(), call.entity_id)}
    raw = multifield_phones(item)
    for kind in ("contact", "company"):
        linked = as_int(item.get(f"{kind.upper()}_ID"))
        if linked:
            own.add((kind.upper(), linked))
            if call.document_type == "deal":
                other = run.client.call(f"crm.{kind}.get", {"id": linked}) or {}
                raw.extend(multifield_phones(other))
    portal = run.session.get(Portal, run.portal_id)
    region = phone_region_for(portal.language if portal else run.language)
    return normalize_phones(raw, region), own


def handle(run: Run, call: RobotCall, item: dict) -> None:
    key = f"call:{call.event_id}"
    title = run.title(call.document_type, call.entity_id, item)
    responsible = as_int(item.get("ASSIGNED_BY_ID"))
    binding = [f"{TASK_PREFIX[call.document_type]}_{call.entity_id}"]
    phones, own = _document_phones(run, call, item)
    if not phones:
        run.task(f"{key}:no_phone", responsible, run.t("no_phone_title"), run.t("no_phone_body", item=title), binding)
        run.reply(key, call.event_token, {"duplicate_id": 0, "duplicate_type": "", "outcome": "no_phone"},
                  "no phone")
        return
    # Bitrix24 matches numbers by their digits; send both the E.164 and the national form.
    values = list(dict.fromkeys(phones + [p.lstrip("+") for p in phones]))[:20]
    # One call per entity_type (crm-duplicate-findbycomm.md): without it, 20 or more hits of one
    # type hide the others; the method knows LEAD, CONTACT and COMPANY, never DEAL.
    kinds = ("CONTACT", "COMPANY", "LEAD")
    answer = run.client.batch({kind: ("crm.duplicate.findbycomm", {"entity_type": kind, "type": "PHONE",
                                                                    "values": values}) for kind in kinds})
    if answer.errors:
        raise next(iter(answer.errors.values()))  # a struggling portal: the robot call is tried again
    known: tuple[str, int] | None = None
    for kind in kinds:
        found = answer.results.get(kind)
        ids = sorted(int(i) for i in (found.get(kind) or [] if isinstance(found, dict) else [])
                     if (kind, int(i)) not in own)
        if ids:
            known = (kind, ids[0])  # the oldest record is the client
            break
    if known is None:
        run.reply(key, call.event_token, {"duplicate_id": 0, "duplicate_type": "", "outcome": "new"}, "new client")
        return
    kind, known_id = known
    known_item = run.client.call(f"crm.{kind.lower()}.get", {"id": known_id}) or {}
    owner = as_int(known_item.get("ASSIGNED_BY_ID"))
    branch = logic.repeat_request_branch(owner, run.users())
    known_title = item_link(kind.lower(), known_id, known_item.get("TITLE") or " ".join(
        p for p in (known_item.get("NAME"), known_item.get("LAST_NAME")) if p) or None)
    returns = {"duplicate_id": known_id, "duplicate_type": kind.lower(), "outcome": branch}
    if branch == "owner":
        # The known client's manager gets the request; the item stays in its stage.
        if owner != responsible:
            run.update_item(f"{key}:owner", call.document_type, call.entity_id, {"ASSIGNED_BY_ID": owner})
        run.task(f"{key}:repeat", owner, run.t("repeat_title"),
                 run.t("repeat_body", known=known_title, phone=phones[0], item=title),
                 binding + [f"{TASK_PREFIX[kind.lower()]}_{known_id}"])
        run.reply(key, call.event_token, returns, f"repeat request: task to {run.user_name(owner)}")
        return
    ignore = set(prop_list(call.properties.get("ignore_stages")))
    stage = str(item.get(STAGE_FIELD[call.document_type]) or "")
    known_stage = str(known_item.get("STATUS_ID") or known_item.get("STAGE_ID") or "")
    first = prop_str(call.properties.get("first_stage")) or run.first_stage(call.document_type, item)
    # Seed 000: a client closed as "not a client" (junk) is not brought back by a repeat request.
    if stage in ignore or known_stage in ignore or not first:
        run.reply(key, call.event_token, {**returns, "outcome": "kept"}, "repeat request: the stage is kept")
        return
    # Nobody active owns the client: back to the first stage, open to everyone, for others to take.
    run.update_item(f"{key}:return", call.document_type, call.entity_id,
                    {STAGE_FIELD[call.document_type]: first, "OPENED": "Y"})
    run.reply(key, call.event_token, returns, f"repeat request: back to {first}")
