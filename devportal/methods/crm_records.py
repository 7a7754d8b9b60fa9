"""REST methods of CRM records: crm.<entity>.* and crm.<entity>.userfield.*, crm.status.list,
crm.stagehistory.list and crm.duplicate.findbycomm."""
from __future__ import annotations

import re
import secrets

from devportal import crm
from devportal.answers import Listing
from devportal.errors import RestError, argument_error, legacy_crm_error
from devportal.methods.common import arg, as_dict, registrar, require_admin, select_list
from devportal.phpquery import as_list

METHODS: dict = {}
method = registrar(METHODS)


def _entity_methods(entity: str):
    prefix = f"crm.{entity}"
    schema = crm.SCHEMAS[entity]

    def export(record: dict, select: list[str] | None) -> dict:
        if select is None:  # .get: everything, with multi-fields when present
            out = {k: v for k, v in record.items() if k not in crm.MULTI_FIELDS}
            for name in crm.MULTI_FIELDS:
                if record.get(name):
                    out[name] = [dict(e) for e in record[name]]
            return out
        wanted = set(select)
        all_std = not wanted or "*" in wanted
        out = {}
        for key, value in record.items():
            if key in crm.MULTI_FIELDS:
                continue
            if key.startswith("UF_"):
                if all_std or "UF_*" in wanted or key in wanted:
                    out[key] = value
            elif all_std or key in wanted or key == "ID":
                out[key] = value
        for name in crm.MULTI_FIELDS:
            if name in wanted and record.get(name):
                out[name] = [dict(e) for e in record[name]]
        return out

    def add(portal, ctx, params):
        fields = as_dict(arg(params, "fields"))
        return portal.add_record(entity, fields, ctx.user_id)

    def get(portal, ctx, params):
        rid = arg(params, "id")
        if rid in (None, "") or not str(rid).isdigit() or int(rid) <= 0:
            raise legacy_crm_error("ID is not defined or invalid.")
        return export(portal.get_record(entity, rid), None)

    def update(portal, ctx, params):
        rid = arg(params, "id")
        if rid in (None, "") or not str(rid).isdigit() or int(rid) <= 0:
            raise legacy_crm_error("ID is not defined or invalid.")
        return portal.update_record(entity, rid, as_dict(arg(params, "fields")), ctx.user_id)

    def delete(portal, ctx, params):
        rid = arg(params, "id")
        if rid in (None, "") or not str(rid).isdigit() or int(rid) <= 0:
            raise legacy_crm_error("ID is not defined or invalid.")
        return portal.delete_record(entity, rid, ctx.user_id)

    def list_(portal, ctx, params):
        flt = as_dict(arg(params, "filter"))
        order = as_dict(arg(params, "order"))
        select = select_list(arg(params, "select"))
        full_schema = {**schema, **{n: uf_schema(d) for n, d in portal.userfields[entity].items()}}
        page, total, nxt = crm.list_page(portal.records[entity], flt, order, arg(params, "start", 0), full_schema,
                                         portal.tz)
        return Listing([export(r, select) for r in page], total, nxt)

    def fields(portal, ctx, params):
        out = {k: dict(v) for k, v in schema.items()}
        for name, definition in portal.userfields[entity].items():
            out[name] = uf_schema(definition)
        return out

    METHODS[f"{prefix}.add"] = add
    METHODS[f"{prefix}.get"] = get
    METHODS[f"{prefix}.update"] = update
    METHODS[f"{prefix}.delete"] = delete
    METHODS[f"{prefix}.list"] = list_
    METHODS[f"{prefix}.fields"] = fields
    _userfield_methods(entity)


def uf_schema(definition: dict) -> dict:
    out = {"type": definition["USER_TYPE_ID"], "isRequired": definition["MANDATORY"] == "Y", "isReadOnly": False,
           "isImmutable": False, "isMultiple": definition["MULTIPLE"] == "Y", "isDynamic": True,
           "title": definition["FIELD_NAME"], "listLabel": definition["LIST_COLUMN_LABEL"],
           "formLabel": definition["EDIT_FORM_LABEL"], "filterLabel": definition["LIST_FILTER_LABEL"],
           "settings": definition["SETTINGS"]}
    if definition["USER_TYPE_ID"] == "enumeration":
        out["items"] = [{"ID": item["ID"], "VALUE": item["VALUE"]} for item in definition["LIST"]]
    return out


_UF_NAME = re.compile(r"^[A-Z0-9_]+$")


def _label(value, default):
    if isinstance(value, dict):
        return value.get("ru") or value.get("en") or next(iter(value.values()), default)
    return value or default


def _userfield_methods(entity: str):
    prefix = f"crm.{entity}.userfield"
    entity_id = f"CRM_{entity.upper()}"

    def _list_items(portal, definition, items):
        current = definition["LIST"]
        for item in as_list(items):
            if not isinstance(item, dict):
                continue
            item = {str(k).upper(): v for k, v in item.items()}
            item_id = str(item.get("ID") or "")
            if item_id:
                existing = next((i for i in current if i["ID"] == item_id), None)
                if existing is None:
                    continue
                if str(item.get("DEL", "")).upper() == "Y":
                    current.remove(existing)
                    continue
                for key in ("VALUE", "SORT", "DEF", "XML_ID"):
                    if key == "XML_ID" and portal.enum_xml_ids == "own":
                        continue
                    if key in item:
                        existing[key] = str(item[key])
                continue
            if not item.get("VALUE"):
                continue
            new_id = str(portal._next("uf_item"))
            current.append({"ID": new_id, "SORT": str(item.get("SORT") or 500), "VALUE": str(item["VALUE"]),
                            "DEF": "Y" if str(item.get("DEF", "N")).upper() == "Y" else "N",
                            "XML_ID": str((portal.enum_xml_ids != "own" and item.get("XML_ID")) or _xml_id())})
        current.sort(key=lambda i: (int(i["SORT"]) if i["SORT"].lstrip("-").isdigit() else 500, int(i["ID"])))

    def add(portal, ctx, params):
        require_admin(portal, ctx)
        fields = {str(k).upper(): v for k, v in as_dict(arg(params, "fields")).items()}
        name = str(fields.get("FIELD_NAME") or "").upper()
        if not name or not _UF_NAME.match(name):
            raise argument_error("FIELD_NAME is invalid", "FIELD_NAME")
        if not name.startswith("UF_CRM_"):
            name = "UF_CRM_" + name
        if len(name) > 50:
            raise argument_error("FIELD_NAME is too long", "FIELD_NAME")
        if name in portal.userfields[entity]:
            raise RestError("ERROR_CORE", f"Ошибка при добавлении пользовательского поля {name}", 400)
        _yes_no(fields, "SHOW_FILTER")
        label = fields.get("LABEL")
        definition = {
            "ID": str(portal._next("uf")), "ENTITY_ID": entity_id, "FIELD_NAME": name,
            "USER_TYPE_ID": str(fields.get("USER_TYPE_ID") or "string"), "XML_ID": fields.get("XML_ID"),
            "SORT": str(fields.get("SORT") or 100), "MULTIPLE": "Y" if str(fields.get("MULTIPLE", "N")).upper() in
            ("Y", "1", "TRUE") else "N", "MANDATORY": "Y" if str(fields.get("MANDATORY", "N")).upper() in
            ("Y", "1", "TRUE") else "N", "SHOW_FILTER": str(fields.get("SHOW_FILTER") or "N"),
            "SHOW_IN_LIST": str(fields.get("SHOW_IN_LIST") or "Y"), "EDIT_IN_LIST": str(fields.get("EDIT_IN_LIST")
                                                                                       or "Y"),
            "IS_SEARCHABLE": "N", "SETTINGS": as_dict(fields.get("SETTINGS")) or {},
            "EDIT_FORM_LABEL": _label(fields.get("EDIT_FORM_LABEL"), _label(label, name)),
            "LIST_COLUMN_LABEL": _label(fields.get("LIST_COLUMN_LABEL"), _label(label, name)),
            "LIST_FILTER_LABEL": _label(fields.get("LIST_FILTER_LABEL"), _label(label, name)),
            "LIST": []}
        if definition["USER_TYPE_ID"] == "enumeration":
            _list_items(portal, definition, fields.get("LIST"))
        portal.userfields[entity][name] = definition
        for record in portal.records[entity].values():
            record.setdefault(name, [] if definition["MULTIPLE"] == "Y" else None)
        return int(definition["ID"])

    def _find(portal, rid):
        for definition in portal.userfields[entity].values():
            if definition["ID"] == str(rid):
                return definition
        raise RestError("ERROR_NOT_FOUND", "The entity with ID '%s' is not found." % rid, 400)

    def _export(definition):
        out = {k: v for k, v in definition.items() if k != "LIST"}
        if definition["USER_TYPE_ID"] == "enumeration":
            out["LIST"] = [dict(i) for i in definition["LIST"]]
        return out

    def get(portal, ctx, params):
        return _export(_find(portal, arg(params, "id")))

    def list_(portal, ctx, params):
        flt = as_dict(arg(params, "filter"))
        rows = []
        for definition in portal.userfields[entity].values():
            ok = all(str(definition.get(str(k).upper(), "")) == str(v) for k, v in flt.items()
                     if str(k).upper() not in ("LANG",))
            if ok:
                rows.append(_export(definition))
        return rows

    def update(portal, ctx, params):
        require_admin(portal, ctx)
        definition = _find(portal, arg(params, "id"))
        fields = {str(k).upper(): v for k, v in as_dict(arg(params, "fields")).items()}
        _yes_no(fields, "SHOW_FILTER")
        for key in ("SORT", "MANDATORY", "SHOW_FILTER", "SHOW_IN_LIST", "EDIT_IN_LIST", "XML_ID"):
            if key in fields:
                definition[key] = str(fields[key])
        for key in ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL"):
            if key in fields or "LABEL" in fields:
                definition[key] = _label(fields.get(key, fields.get("LABEL")), definition[key])
        if "SETTINGS" in fields:
            definition["SETTINGS"] = as_dict(fields["SETTINGS"])
        if "LIST" in fields and definition["USER_TYPE_ID"] == "enumeration":
            _list_items(portal, definition, fields["LIST"])
            valid = {i["ID"] for i in definition["LIST"]}
            for record in portal.records[entity].values():  # values of deleted items vanish
                value = record.get(definition["FIELD_NAME"])
                if isinstance(value, list):
                    record[definition["FIELD_NAME"]] = [v for v in value if v in valid]
                elif value is not None and value not in valid:
                    record[definition["FIELD_NAME"]] = None
        return True

    def delete(portal, ctx, params):
        require_admin(portal, ctx)
        definition = _find(portal, arg(params, "id"))
        del portal.userfields[entity][definition["FIELD_NAME"]]
        for record in portal.records[entity].values():
            record.pop(definition["FIELD_NAME"], None)
        return True

    METHODS[f"{prefix}.add"] = add
    METHODS[f"{prefix}.get"] = get
    METHODS[f"{prefix}.list"] = list_
    METHODS[f"{prefix}.update"] = update
    METHODS[f"{prefix}.delete"] = delete


def _yes_no(fields: dict, key: str) -> None:
    """A flag the docs list as Y or N (crm-contact-userfield-add.md: SHOW_FILTER) takes nothing else."""
    if key in fields and str(fields[key]).upper() not in ("Y", "N"):
        raise argument_error(f"{key} must be Y or N", key)


def _xml_id() -> str:
    return secrets.token_hex(16)


for _entity in crm.SCHEMAS:
    _entity_methods(_entity)


@method("crm.status.list")
def status_list(portal, ctx, params):
    flt = {str(k).upper(): v for k, v in as_dict(arg(params, "filter")).items()}
    rows = []
    sid = 0
    for entity_id, items in (("DEAL_STAGE", crm.DEAL_STAGES), ("STATUS", crm.LEAD_STATUSES)):
        for code, name, sort, semantic in items:
            sid += 1
            sem = {"S": "success", "F": "failure"}.get(semantic)
            color = {"S": "#7BD500", "F": "#FF5752"}.get(semantic, "#39A8EF")
            rows.append({"ID": str(sid), "ENTITY_ID": entity_id, "STATUS_ID": code, "NAME": name,
                         "NAME_INIT": name, "SORT": str(sort), "SYSTEM": "Y" if semantic != "P" or code == "NEW"
                         else "N", "COLOR": color, "SEMANTICS": sem, "CATEGORY_ID": "0" if entity_id == "DEAL_STAGE"
                         else None, "EXTRA": {"SEMANTICS": {"S": "success", "F": "failure"}.get(semantic, "process"),
                                              "COLOR": color}})
    for key, value in flt.items():
        rows = [r for r in rows if str(r.get(key)) == str(value)]
    return rows


# doc: api-reference/crm/crm-stage-history-list.md (items with integer IDs)
@method("crm.stagehistory.list")
def stage_history_list(portal, ctx, params):
    kind = {1: "lead", 2: "deal"}.get(int(arg(params, "entityTypeId") or 0))
    if kind is None:
        raise RestError("ENTITY_TYPE_NOT_SUPPORTED", "Entity type is not supported", 400)
    rows = [r for r in portal.stage_history if r["_entity"] == kind]
    flt = as_dict(arg(params, "filter"))
    if flt:
        pred = crm.compile_filter(flt, _STAGE_HISTORY_SCHEMA, portal.tz)
        rows = [r for r in rows if pred(r)]
    rows = crm.sort_records(rows, as_dict(arg(params, "order")), _STAGE_HISTORY_SCHEMA, portal.tz)
    page, total, nxt = crm.page_of(rows, arg(params, "start", 0))
    select = select_list(arg(params, "select"))
    items = [{k: v for k, v in r.items() if not k.startswith("_") and (not select or "*" in select or k in select)}
             for r in page]
    return Listing({"items": items}, total, nxt)


_STAGE_HISTORY_SCHEMA = {"ID": {"type": "integer"}, "TYPE_ID": {"type": "integer"}, "OWNER_ID": {"type": "integer"},
                         "CATEGORY_ID": {"type": "integer"}, "CREATED_TIME": {"type": "datetime"}}


# ---------------------------------------------------------------------- duplicates
def _digits(value: str) -> str:
    digits = re.sub(r"\D", "", str(value).split(" доб")[0].split("ext")[0].split("#")[0])
    if len(digits) == 11 and digits[0] in "78":
        digits = digits[1:]  # +7 and 8 prefixes name the same Russian number
    return digits


@method("crm.duplicate.findbycomm")
def duplicate_find(portal, ctx, params):
    kind = str(arg(params, "type") or "").upper()
    if kind not in ("PHONE", "EMAIL"):
        raise argument_error("Communication type is not supported", "type")
    values = as_list(arg(params, "values"))
    if not values:
        raise argument_error("Values are empty", "values")
    if len(values) > 20:
        raise argument_error("Too many values", "values")
    norm = (lambda v: _digits(v)) if kind == "PHONE" else (lambda v: str(v).strip().lower())
    wanted = {norm(v) for v in values if norm(v)}
    types = [str(arg(params, "entity_type")).lower()] if arg(params, "entity_type") else ["lead", "contact", "company"]
    found = {}
    for entity in types:
        ids = [int(r["ID"]) for r in portal.records.get(entity, {}).values()
               if any(norm(e["VALUE"]) in wanted for e in r.get(kind) or [])]
        if ids:
            found[entity.upper()] = ids
    return found if found else []
