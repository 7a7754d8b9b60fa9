"""REST methods of the newer CRM API: crm.item.* (camelCase names, entityTypeId, `fm`)."""
from __future__ import annotations

import copy

from devportal import crm
from devportal.answers import Listing
from devportal.errors import RestError
from devportal.methods.common import arg, as_dict, registrar, select_list
from devportal.methods.crm_records import uf_schema

METHODS: dict = {}
method = registrar(METHODS)


_ITEM_TYPES = {1: "lead", 2: "deal", 3: "contact", 4: "company"}
_ITEM_NAMES = {"ID": "id", "DATE_CREATE": "createdTime", "DATE_MODIFY": "updatedTime", "CREATED_BY_ID": "createdBy",
               "MODIFY_BY_ID": "updatedBy", "COMPANY_TYPE": "typeId"}


def _camel(name: str) -> str:
    if name in _ITEM_NAMES:
        return _ITEM_NAMES[name]
    head, *rest = name.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def _item_entity(params) -> str:
    try:
        entity = _ITEM_TYPES.get(int(arg(params, "entityTypeId") or 0))
    except (TypeError, ValueError):
        entity = None
    if entity is None:
        raise RestError("NOT_FOUND", "Smart process not found", 400)
    return entity


def _item_view(record: dict, select: list[str] | None, original_uf: bool) -> dict:
    out = {}
    for key, value in record.items():
        if key in crm.MULTI_FIELDS:
            continue
        name = key if (original_uf and key.startswith("UF_")) else _camel(key)
        out[name] = int(value) if key == "ID" else value
    if select is None or "*" in select:
        out["fm"] = [{"id": int(e["ID"]), "typeId": e["TYPE_ID"], "valueType": e["VALUE_TYPE"], "value": e["VALUE"]}
                     for name in crm.MULTI_FIELDS for e in record.get(name) or []]
    if select and "*" not in select:
        wanted = {s.lower() for s in select} | {"id"}
        out = {k: v for k, v in out.items() if k.lower() in wanted}
    return out


def _item_fields(entity: str, portal, fields: dict) -> dict:
    """camelCase item fields (and `fm`) to the legacy upper-case fields the store applies."""
    names = {_camel(n): n for n in crm.SCHEMAS[entity]} | {_camel(n): n for n in portal.userfields[entity]}
    out: dict = {}
    for key, value in (fields or {}).items():
        if key == "fm":
            for fm_key, entry in (value.items() if isinstance(value, dict) else enumerate(value or [])):
                if not isinstance(entry, dict):
                    continue
                type_id = str(entry.get("typeId") or "PHONE").upper()
                legacy = {"VALUE": entry.get("value", ""), "VALUE_TYPE": entry.get("valueType")}
                if str(fm_key).isdigit() and not isinstance(value, list):
                    legacy["ID"] = str(fm_key)
                elif entry.get("id"):
                    legacy["ID"] = str(entry["id"])
                out.setdefault(type_id, []).append(legacy)
            continue
        name = names.get(key) or (key.upper() if key.upper() in names.values() else None)
        if name:
            out[name] = value
    return out


@method("crm.item.get")
def item_get(portal, ctx, params):
    entity = _item_entity(params)
    record = portal.records[entity].get(int(arg(params, "id") or 0))
    if record is None:
        raise RestError("NOT_FOUND", "Элемент не найден", 400)
    return {"item": _item_view(record, None, str(arg(params, "useOriginalUfNames", "N")).upper() == "Y")}


@method("crm.item.list")
def item_list(portal, ctx, params):
    entity = _item_entity(params)
    original = str(arg(params, "useOriginalUfNames", "N")).upper() == "Y"
    names = {_camel(n).lower(): n for n in list(crm.SCHEMAS[entity]) + list(portal.userfields[entity])}
    flt = {}
    for key, value in as_dict(arg(params, "filter")).items():
        if str(key).lower() == "logic":
            continue
        op, field = crm.split_filter_key(str(key))
        flt[("" if op == "=" and not str(key).startswith("=") else op) + names.get(field.lower(), field.upper())] = value
    order = {names.get(str(k).lower(), str(k).upper()): v for k, v in as_dict(arg(params, "order")).items()}
    schema = {**crm.SCHEMAS[entity], **{n: uf_schema(d) for n, d in portal.userfields[entity].items()}}
    rows = list(portal.records[entity].values())
    if flt:
        pred = crm.compile_filter(flt, schema, portal.tz)
        rows = [r for r in rows if pred(r)]
    rows = crm.sort_records(rows, order, schema, portal.tz)
    start = arg(params, "start", 0)
    try:
        start = int(start or 0)
    except (TypeError, ValueError):
        start = 0
    if start == -1:
        page, total, nxt = rows[:crm.PAGE], None, None
    else:  # ORM methods page from the exact offset
        start = max(0, start)
        page, total = rows[start:start + crm.PAGE], len(rows)
        nxt = start + crm.PAGE if start + crm.PAGE < total else None
    select = select_list(arg(params, "select")) or None
    return Listing({"items": [_item_view(r, select, original) for r in page]}, total, nxt)


@method("crm.item.add")
def item_add(portal, ctx, params):
    entity = _item_entity(params)
    rid = portal.add_record(entity, _item_fields(entity, portal, as_dict(arg(params, "fields"))), ctx.user_id)
    return {"item": _item_view(portal.records[entity][rid], None, False)}


@method("crm.item.update")
def item_update(portal, ctx, params):
    entity = _item_entity(params)
    record = portal.records[entity].get(int(arg(params, "id") or 0))
    if record is None:
        raise RestError("NOT_FOUND", "Элемент не найден", 400)
    fields = _item_fields(entity, portal, as_dict(arg(params, "fields")))
    trial = copy.deepcopy(record)
    portal._apply_fields(entity, trial, copy.deepcopy(fields))
    if trial != record:  # crm.item.update skips the save when nothing changes
        portal.update_record(entity, record["ID"], fields, ctx.user_id)
    return {"item": _item_view(record, None, False)}


@method("crm.item.delete")
def item_delete(portal, ctx, params):
    entity = _item_entity(params)
    if int(arg(params, "id") or 0) not in portal.records[entity]:
        raise RestError("NOT_FOUND", "Элемент не найден", 400)
    portal.delete_record(entity, arg(params, "id"), ctx.user_id)
    return []
