"""CRM records of the devportal: field schemas, multi-fields, list filtering, ordering and paging."""
from __future__ import annotations

import math
from functools import lru_cache
from datetime import datetime

PAGE = 50
MULTI_FIELDS = ("PHONE", "EMAIL", "WEB", "IM")
OWNER_TYPE = {"lead": 1, "deal": 2, "contact": 3, "company": 4}
OWNER_TYPE_NAME = {v: k for k, v in OWNER_TYPE.items()}
# the bizproc document of a deal or lead: (document class, id prefix), as in DEAL_7
DOC_IDS = {"deal": ("CCrmDocumentDeal", "DEAL"), "lead": ("CCrmDocumentLead", "LEAD")}


def _f(type_, title, required=False, readonly=False, multiple=False, **extra):
    return {"type": type_, "isRequired": required, "isReadOnly": readonly, "isImmutable": False,
            "isMultiple": multiple, "isDynamic": False, "title": title, **extra}


_COMMON_TAIL = {
    "OPENED": _f("char", "Available to everyone"),
    "ASSIGNED_BY_ID": _f("user", "Responsible person"),
    "CREATED_BY_ID": _f("user", "Created by", readonly=True),
    "MODIFY_BY_ID": _f("user", "Modified by", readonly=True),
    "DATE_CREATE": _f("datetime", "Created on", readonly=True),
    "DATE_MODIFY": _f("datetime", "Modified on", readonly=True),
    "COMMENTS": _f("string", "Comment"),
    "LAST_ACTIVITY_TIME": _f("datetime", "Last activity", readonly=True),
    "LAST_ACTIVITY_BY": _f("user", "Last activity by", readonly=True),
}
_MULTI = {
    "PHONE": _f("crm_multifield", "Phone", multiple=True),
    "EMAIL": _f("crm_multifield", "E-mail", multiple=True),
    "WEB": _f("crm_multifield", "Website", multiple=True),
    "IM": _f("crm_multifield", "Messenger", multiple=True),
}

# Standard fields per entity, as crm.*.fields describes them (a faithful subset).
SCHEMAS: dict[str, dict[str, dict]] = {
    "contact": {
        "ID": _f("integer", "ID", readonly=True),
        "HONORIFIC": _f("crm_status", "Salutation", statusType="HONORIFIC"),
        "NAME": _f("string", "Name"),
        "SECOND_NAME": _f("string", "Second name"),
        "LAST_NAME": _f("string", "Last name"),
        "BIRTHDATE": _f("date", "Date of birth"),
        "TYPE_ID": _f("crm_status", "Contact type", statusType="CONTACT_TYPE"),
        "SOURCE_ID": _f("crm_status", "Source", statusType="SOURCE"),
        "POST": _f("string", "Position"),
        "HAS_PHONE": _f("char", "Has phone", readonly=True),
        "HAS_EMAIL": _f("char", "Has e-mail", readonly=True),
        "HAS_IMOL": _f("char", "Has Open Channel", readonly=True),
        "EXPORT": _f("char", "Included in export"),
        "COMPANY_ID": _f("crm_company", "Company"),
        "LEAD_ID": _f("crm_lead", "Lead", readonly=True),
        "ORIGINATOR_ID": _f("string", "External source"),
        "ORIGIN_ID": _f("string", "Item ID in data source"),
        **_COMMON_TAIL, **_MULTI,
    },
    "company": {
        "ID": _f("integer", "ID", readonly=True),
        "TITLE": _f("string", "Company name", required=True),
        "COMPANY_TYPE": _f("crm_status", "Company type", statusType="COMPANY_TYPE"),
        "INDUSTRY": _f("crm_status", "Industry", statusType="INDUSTRY"),
        "EMPLOYEES": _f("crm_status", "Employees", statusType="EMPLOYEES"),
        "REVENUE": _f("double", "Annual revenue"),
        "CURRENCY_ID": _f("crm_currency", "Currency"),
        "HAS_PHONE": _f("char", "Has phone", readonly=True),
        "HAS_EMAIL": _f("char", "Has e-mail", readonly=True),
        "HAS_IMOL": _f("char", "Has Open Channel", readonly=True),
        "LEAD_ID": _f("crm_lead", "Lead", readonly=True),
        "ORIGINATOR_ID": _f("string", "External source"),
        "ORIGIN_ID": _f("string", "Item ID in data source"),
        **_COMMON_TAIL, **_MULTI,
    },
    "deal": {
        "ID": _f("integer", "ID", readonly=True),
        "TITLE": _f("string", "Name"),
        "TYPE_ID": _f("crm_status", "Type", statusType="DEAL_TYPE"),
        "CATEGORY_ID": _f("crm_category", "Pipeline"),
        "STAGE_ID": _f("crm_status", "Deal stage", statusType="DEAL_STAGE"),
        "STAGE_SEMANTIC_ID": _f("string", "Stage group", readonly=True),
        "IS_NEW": _f("char", "New deal", readonly=True),
        "PROBABILITY": _f("integer", "Probability"),
        "OPPORTUNITY": _f("double", "Income"),
        "CURRENCY_ID": _f("crm_currency", "Currency"),
        "COMPANY_ID": _f("crm_company", "Company"),
        "CONTACT_ID": _f("crm_contact", "Contact"),
        "BEGINDATE": _f("date", "Start date"),
        "CLOSEDATE": _f("date", "End date"),
        "CLOSED": _f("char", "Closed"),
        "LEAD_ID": _f("crm_lead", "Lead", readonly=True),
        "SOURCE_ID": _f("crm_status", "Source", statusType="SOURCE"),
        **_COMMON_TAIL,
    },
    "lead": {
        "ID": _f("integer", "ID", readonly=True),
        "TITLE": _f("string", "Lead name"),
        "NAME": _f("string", "First name"),
        "SECOND_NAME": _f("string", "Second name"),
        "LAST_NAME": _f("string", "Last name"),
        "COMPANY_TITLE": _f("string", "Company name"),
        "SOURCE_ID": _f("crm_status", "Source", statusType="SOURCE"),
        "STATUS_ID": _f("crm_status", "Status", statusType="STATUS"),
        "STATUS_SEMANTIC_ID": _f("string", "Status group", readonly=True),
        "OPPORTUNITY": _f("double", "Amount"),
        "CURRENCY_ID": _f("crm_currency", "Currency"),
        "CONTACT_ID": _f("crm_contact", "Contact"),
        "COMPANY_ID": _f("crm_company", "Company"),
        "HAS_PHONE": _f("char", "Has phone", readonly=True),
        "HAS_EMAIL": _f("char", "Has e-mail", readonly=True),
        "HAS_IMOL": _f("char", "Has Open Channel", readonly=True),
        "DATE_CLOSED": _f("datetime", "Closed on", readonly=True),
        **_COMMON_TAIL, **_MULTI,
    },
}

ACTIVITY_FIELDS = ["ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "PROVIDER_ID", "PROVIDER_TYPE_ID",
                   "PROVIDER_GROUP_ID", "ASSOCIATED_ENTITY_ID", "SUBJECT", "CREATED", "LAST_UPDATED",
                   "START_TIME", "END_TIME", "DEADLINE", "COMPLETED", "STATUS", "RESPONSIBLE_ID",
                   "PRIORITY", "NOTIFY_TYPE", "NOTIFY_VALUE", "DESCRIPTION", "DESCRIPTION_TYPE",
                   "DIRECTION", "LOCATION", "SETTINGS", "ORIGINATOR_ID", "ORIGIN_ID", "AUTHOR_ID",
                   "EDITOR_ID"]

DEAL_STAGES = [("NEW", "Новая", 10, "P"), ("PREPARATION", "Подготовка документов", 20, "P"),
               ("PREPAYMENT_INVOICE", "Счёт на предоплату", 30, "P"), ("EXECUTING", "В работе", 40, "P"),
               ("FINAL_INVOICE", "Финальный счёт", 50, "P"), ("WON", "Сделка успешна", 60, "S"),
               ("LOSE", "Сделка провалена", 70, "F"), ("APOLOGY", "Анализ причины провала", 80, "F")]
LEAD_STATUSES = [("NEW", "Не обработан", 10, "P"), ("IN_PROCESS", "В работе", 20, "P"),
                 ("PROCESSED", "Обработан", 30, "P"), ("CONVERTED", "Качественный лид", 40, "S"),
                 ("JUNK", "Некачественный лид", 50, "F")]
STAGE_SEMANTICS = {"deal": {s[0]: s[3] for s in DEAL_STAGES}, "lead": {s[0]: s[3] for s in LEAD_STATUSES}}

_NUMERIC_TYPES = {"integer", "double", "user", "crm_company", "crm_contact", "crm_lead", "crm_category",
                  "employee", "enumeration", "boolean"}
_DATE_TYPES = {"date", "datetime"}
_ACTIVITY_NUMERIC = {"ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "STATUS", "RESPONSIBLE_ID", "PRIORITY",
                     "DIRECTION", "AUTHOR_ID", "EDITOR_ID", "ASSOCIATED_ENTITY_ID"}
_ACTIVITY_DATES = {"CREATED", "LAST_UPDATED", "START_TIME", "END_TIME", "DEADLINE"}


def field_kind(schema: dict | None, name: str) -> str:
    """'num', 'date' or 'str': how a filter or an order compares this field."""
    if schema is None:  # activities
        if name in _ACTIVITY_NUMERIC:
            return "num"
        return "date" if name in _ACTIVITY_DATES else "str"
    spec = schema.get(name)
    if spec is None:
        return "str"
    if spec["type"] in _DATE_TYPES:
        return "date"
    return "num" if spec["type"] in _NUMERIC_TYPES else "str"


def parse_datetime(value, tz) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    text = str(value).strip().replace(" ", "T", 1)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        try:
            dt = datetime.strptime(str(value).strip(), "%d.%m.%Y")
        except ValueError:
            return None
    return dt if dt.tzinfo else dt.replace(tzinfo=tz)


def _num(value):
    if value is None or value == "" or isinstance(value, (list, dict)):
        return None
    if isinstance(value, bool):
        return int(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@lru_cache(maxsize=262_144)
def _cached_datetime(text: str, tz):
    # stored stamps repeat across every list call; parsing them once keeps date filters cheap
    return parse_datetime(text, tz)


def _coerce(kind, value, tz):
    if kind == "num":
        return _num(value)
    if kind == "date":
        return _cached_datetime(value, tz) if isinstance(value, str) else parse_datetime(value, tz)
    if value is None:
        return None
    return str(value).lower()


_OPS = (">=", "<=", "=%", "!%", "!@", "!=", "%", ">", "<", "@", "!", "=")


def split_filter_key(key: str) -> tuple[str, str]:
    for op in _OPS:
        if key.startswith(op):
            return op, key[len(op):]
    return "=", key


def _record_values(record: dict, name: str):
    """The values a filter compares: multi-fields and multiple UFs are a set of values."""
    value = record.get(name)
    if name in MULTI_FIELDS:
        return [e.get("VALUE") for e in (value or [])], True
    if isinstance(value, list):
        return value, True
    return value, False


def compile_filter(flt: dict, schema: dict | None, tz):
    """Turn a REST `filter` into a predicate over stored records."""
    checks = []
    for raw_key, raw_value in (flt or {}).items():
        if str(raw_key).upper() == "LOGIC":
            continue
        op, name = split_filter_key(str(raw_key))
        name = name.upper()
        kind = field_kind(schema, name)
        if isinstance(raw_value, dict):
            raw_value = list(raw_value.values())
        if op in ("@", "!@") or isinstance(raw_value, list):
            wanted = {_coerce(kind, v, tz) for v in (raw_value if isinstance(raw_value, list) else [raw_value])}
            negate = op.startswith("!")
            checks.append(_in_check(name, kind, wanted, negate, tz))
            continue
        target = _coerce(kind, raw_value, tz)
        checks.append(_op_check(name, kind, op, target, raw_value, tz))

    def predicate(record: dict) -> bool:
        return all(check(record) for check in checks)

    return predicate


def _in_check(name, kind, wanted, negate, tz):
    def check(record):
        values, multi = _record_values(record, name)
        values = values if multi else [values]
        hit = any(_coerce(kind, v, tz) in wanted for v in values)
        return hit != negate
    return check


def _op_check(name, kind, op, target, raw, tz):
    empty = raw is None or raw == "" or raw is False and kind != "num"

    def compare(value) -> bool:
        v = _coerce(kind, value, tz)
        if op in ("=", "!", "!="):
            if empty:
                return v is None or v == ""
            return v == target
        if op in ("%", "=%", "!%"):
            needle = str(raw).lower().strip("%")
            return v is not None and needle in str(v).lower()
        if v is None or target is None:
            return False
        if op == ">":
            return v > target
        if op == ">=":
            return v >= target
        if op == "<":
            return v < target
        return v <= target  # "<="

    negate = op in ("!", "!=", "!%")

    def check(record):
        values, multi = _record_values(record, name)
        if multi:
            if not values:
                hit = compare(None)
            else:
                hit = any(compare(v) for v in values)
        else:
            hit = compare(values)
        return hit != negate
    return check


def sort_records(records: list, order: dict, schema: dict | None, tz) -> list:
    if not order:
        return records
    if len(order) == 1 and str(next(iter(order))).upper() == "ID":
        # records are kept in ID order already: full scans by ID stay cheap
        ids_desc = str(next(iter(order.values()))).upper() == "DESC"
        return list(reversed(records)) if ids_desc else records
    for raw_field, direction in reversed(list(order.items())):
        name = str(raw_field).upper()
        kind = field_kind(schema, name)
        desc = str(direction).upper() == "DESC"

        def key(record, name=name, kind=kind):
            v = _coerce(kind, record.get(name), tz)
            # records without a value sort last ascending, like MySQL NULLs sort first descending
            return (v is None, v if v is not None else 0) if kind != "str" else (v is None, v or "")
        records = sorted(records, key=key, reverse=desc)
    return records


def page_of(records: list, start) -> tuple[list, int | None, int | None]:
    """(rows, total, next) for a legacy list call; start is floored to a multiple of 50; -1 skips the count."""
    try:
        start = int(start or 0)
    except (TypeError, ValueError):
        start = 0
    if start == -1:
        return records[:PAGE], None, None
    start = max(0, start) // PAGE * PAGE
    total = len(records)
    rows = records[start:start + PAGE]
    nxt = start + PAGE if start + PAGE < total else None
    return rows, total, nxt


def _id_floor(flt: dict) -> int | None:
    """The smallest ID a `>ID` / `>=ID` filter lets through, for a bisect start."""
    floor = None
    for key, value in (flt or {}).items():
        op, name = split_filter_key(str(key))
        if name.upper() != "ID" or op not in (">", ">=") or isinstance(value, (list, dict)):
            continue
        number = _num(value)
        if number is None:
            continue
        candidate = math.floor(number) + 1 if op == ">" else math.ceil(number)
        floor = candidate if floor is None else max(floor, candidate)
    return floor


def list_page(by_id: dict, flt: dict, order: dict, start, schema: dict | None, tz):
    """(rows, total, next) of a legacy list over records kept in ascending ID order.

    `start=-1` ordered by ID needs no count, so it stops at the 50th match (after a bisect to a `>ID`
    floor): full scans by ID windows stay linear, as they are on a real portal's index."""
    by_id_order = not order or (len(order) == 1 and str(next(iter(order))).upper() == "ID")
    descending = bool(order) and str(next(iter(order.values()))).upper() == "DESC"
    if str(start).strip() == "-1" and by_id_order and not descending:
        import bisect
        ids = list(by_id)
        floor = _id_floor(flt)
        begin = bisect.bisect_left(ids, floor) if floor is not None else 0
        pred = compile_filter(flt, schema, tz) if flt else None
        rows = []
        for rid in ids[begin:]:
            record = by_id[rid]
            if pred is None or pred(record):
                rows.append(record)
                if len(rows) == PAGE:
                    break
        return rows, None, None
    records = list(by_id.values())
    if flt:
        pred = compile_filter(flt, schema, tz)
        records = [r for r in records if pred(r)]
    records = sort_records(records, order, schema, tz)
    return page_of(records, start)
