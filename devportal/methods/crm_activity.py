"""REST methods of what happens around CRM records: activities (crm.activity.*), call statistics
(voximplant.statistic.get) and timeline comments (crm.timeline.comment.*)."""
from __future__ import annotations

from devportal import crm
from devportal.answers import Listing
from devportal.errors import RestError, argument_error, legacy_crm_error
from devportal.methods.common import TEXT_LIMIT, arg, as_dict, registrar, select_list, text_too_long
from devportal.phpquery import as_list

METHODS: dict = {}
method = registrar(METHODS)


def _export_activity(row: dict, select: list[str] | None) -> dict:
    out = {k: v for k, v in row.items() if k not in ("COMMUNICATIONS", "BINDINGS")}
    if select and "*" not in select:
        out = {k: v for k, v in out.items() if k in select or k == "ID"}
    if select and "COMMUNICATIONS" in select:
        out["COMMUNICATIONS"] = [dict(c, ID=str(i + 1)) for i, c in enumerate(row.get("COMMUNICATIONS") or [])]
    return out


@method("crm.activity.list")
def activity_list(portal, ctx, params):
    flt = dict(as_dict(arg(params, "filter")))
    bindings = flt.pop("BINDINGS", None)
    source = portal.activities
    if bindings:
        # A pair may name the owner type alone (crm-activity-list.md, "Using BINDINGS").
        wanted = [(str(b.get("OWNER_TYPE_ID")), None if b.get("OWNER_ID") in (None, "") else str(b["OWNER_ID"]))
                  for b in as_list(bindings) if isinstance(b, dict)]
        source = {k: r for k, r in source.items()
                  if any(str(b["OWNER_TYPE_ID"]) == t and (i is None or str(b["OWNER_ID"]) == i)
                         for b in r.get("BINDINGS") or [] for t, i in wanted)}
    order = as_dict(arg(params, "order")) or {"START_TIME": "ASC"}
    page, total, nxt = crm.list_page(source, flt, order, arg(params, "start", 0), None, portal.tz)
    select = select_list(arg(params, "select"))
    return Listing([_export_activity(r, select) for r in page], total, nxt)


@method("crm.activity.get")
def activity_get(portal, ctx, params):
    rid = arg(params, "id")
    try:
        row = portal.activities.get(int(rid))
    except (TypeError, ValueError):
        raise legacy_crm_error("ID is not defined or invalid.") from None
    if row is None:
        raise legacy_crm_error("Not found")
    # The documented answer (crm-activity-get.md) has COMMUNICATIONS but no BINDINGS: the other
    # items a call is bound to come from crm.activity.binding.list.
    out = _export_activity(row, None)
    out["COMMUNICATIONS"] = [dict(c, ID=str(i + 1)) for i, c in enumerate(row.get("COMMUNICATIONS") or [])]
    return out


# doc: api-reference/crm/timeline/activities/binding/crm-activity-binding-list.md
@method("crm.activity.binding.list")
def activity_binding_list(portal, ctx, params):
    rid = arg(params, "activityId")
    if rid in (None, ""):
        raise RestError("100", "Required fields are not provided: activityId", 400)
    try:
        row = portal.activities.get(int(rid))
    except (TypeError, ValueError):
        raise RestError("100", "activityId must be an integer", 400) from None
    if row is None:
        raise RestError("NOT_FOUND", "Element not found", 400)
    return [{"entityTypeId": int(b["OWNER_TYPE_ID"]), "entityId": int(b["OWNER_ID"])}
            for b in row.get("BINDINGS") or []]


@method("crm.activity.todo.add")
def activity_todo_add(portal, ctx, params):
    owner_type = arg(params, "ownerTypeId")
    owner_id = arg(params, "ownerId")
    deadline = arg(params, "deadline")
    if not owner_type or not owner_id:
        raise RestError("OWNER_NOT_FOUND", "Owner not found", 400)
    if not deadline:
        raise argument_error("deadline is required", "deadline")
    when = crm.parse_datetime(deadline, portal.tz)
    responsible = arg(params, "responsibleId") or ctx.user_id
    aid = portal.add_activity({"OWNER_ID": owner_id, "OWNER_TYPE_ID": owner_type, "TYPE_ID": 6,
                               "PROVIDER_ID": "CRM_TODO", "PROVIDER_TYPE_ID": "TODO",
                               "SUBJECT": arg(params, "title") or "", "DESCRIPTION": arg(params, "description") or "",
                               "START_TIME": portal.iso(when) if when else None,
                               "END_TIME": portal.iso(when) if when else None,
                               "DEADLINE": portal.iso(when) if when else None, "COMPLETED": "N", "STATUS": "1",
                               "RESPONSIBLE_ID": responsible, "DIRECTION": 0}, ctx.user_id)
    portal.todos.append({"id": aid, "owner_type_id": int(owner_type), "owner_id": int(owner_id),
                         "title": arg(params, "title"), "responsible_id": int(responsible)})
    return {"id": aid}


_STATISTIC_SCHEMA = {"ID": {"type": "integer"}, "PORTAL_USER_ID": {"type": "user"}, "CALL_TYPE": {"type": "integer"},
                     "CALL_DURATION": {"type": "integer"}, "CRM_ENTITY_ID": {"type": "integer"},
                     "CRM_ACTIVITY_ID": {"type": "integer"}, "CALL_START_DATE": {"type": "datetime"}}


# doc: api-reference/telephony/voximplant/voximplant-statistic-get.md
@method("voximplant.statistic.get")
def statistic_get(portal, ctx, params):
    rows = list(portal.call_statistics)
    flt = as_dict(arg(params, "FILTER"))
    if flt:
        pred = crm.compile_filter(flt, _STATISTIC_SCHEMA, portal.tz)
        rows = [r for r in rows if pred(r)]
    sort = arg(params, "SORT")
    if sort:
        rows = crm.sort_records(rows, {sort: arg(params, "ORDER") or "ASC"}, _STATISTIC_SCHEMA, portal.tz)
    page, total, nxt = crm.page_of(rows, arg(params, "start", 0))
    return Listing([dict(r) for r in page], total, nxt)


# ---------------------------------------------------------------------- timeline
_TIMELINE_TYPES = {"lead", "deal", "contact", "company"}


@method("crm.timeline.comment.add")
def timeline_comment_add(portal, ctx, params):
    fields = params.get("fields")  # the only method whose top-level key must be lower case
    if not isinstance(fields, dict):
        raise argument_error("Fields are empty", "fields")
    entity_type = str(fields.get("ENTITY_TYPE") or "").lower()
    entity_id = fields.get("ENTITY_ID")
    if entity_type not in _TIMELINE_TYPES and not entity_type.startswith("dynamic_"):
        raise argument_error("Entity type is not supported", "ENTITY_TYPE")
    if entity_type in _TIMELINE_TYPES and int(entity_id or 0) not in portal.records[entity_type]:
        raise RestError("NOT_FOUND", "Not found", 400)
    if not fields.get("COMMENT"):
        raise argument_error("Empty comment message.", "COMMENT")
    if text_too_long(fields.get("COMMENT")):
        raise argument_error(f"Comment is longer than {TEXT_LIMIT} characters", "COMMENT")
    cid = portal._next("timeline")
    portal.timeline_comments.append({"ID": str(cid), "CREATED": portal.iso(), "ENTITY_ID": int(entity_id),
                                     "ENTITY_TYPE": entity_type, "AUTHOR_ID": str(fields.get("AUTHOR_ID") or
                                                                                  ctx.user_id),
                                     "COMMENT": fields["COMMENT"], "FILES": []})
    return cid


@method("crm.timeline.comment.list")
def timeline_comment_list(portal, ctx, params):
    flt = {str(k).upper(): v for k, v in as_dict(arg(params, "filter")).items()}
    rows = [dict(c) for c in portal.timeline_comments
            if ("ENTITY_ID" not in flt or str(c["ENTITY_ID"]) == str(flt["ENTITY_ID"]))
            and ("ENTITY_TYPE" not in flt or c["ENTITY_TYPE"] == str(flt["ENTITY_TYPE"]).lower())]
    order = {str(k).upper(): str(v).upper() for k, v in as_dict(arg(params, "order")).items()}
    if order.get("ID") == "DESC" or order.get("CREATED") == "DESC":  # ID and CREATED grow together
        rows.reverse()
    page, total, nxt = crm.page_of(rows, arg(params, "start", 0))
    return Listing(page, total, nxt)
