"""The portal's CRM writes (REST methods and ctl actions share them): records, multi-fields,
userfield values, stage history, activities and calls, and the `act_*` actions of a CRM user."""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from devportal import crm
from devportal.errors import legacy_crm_error, not_found


class RecordsMixin:
    """DevPortal's CRM records and activities."""

    def _fm_entries(self, value) -> list[dict]:
        if isinstance(value, dict):
            value = list(value.values())
        if not isinstance(value, list):
            return []
        return [e for e in value if isinstance(e, dict)]

    def _apply_multi(self, record: dict, name: str, value) -> None:
        """PHONE/EMAIL update rules: no ID adds; ID with VALUE replaces; DELETE=Y, empty or bare ID deletes."""
        current = record.setdefault(name, [])
        for entry in self._fm_entries(value):
            entry = {str(k).upper(): v for k, v in entry.items()}
            entry_id = str(entry.get("ID") or "")
            if not entry_id or entry_id.startswith("n"):
                if entry.get("VALUE") not in (None, ""):
                    current.append({"ID": str(self._next("fm")), "VALUE_TYPE": str(entry.get("VALUE_TYPE") or
                                    ("WORK" if name != "IM" else "OTHER")), "VALUE": str(entry["VALUE"]),
                                    "TYPE_ID": name})
                continue
            existing = next((e for e in current if e["ID"] == entry_id), None)
            if existing is None:
                continue
            if str(entry.get("DELETE", "")).upper() == "Y" or entry.get("VALUE") in (None, ""):
                current.remove(existing)
            else:
                existing["VALUE"] = str(entry["VALUE"])
                if entry.get("VALUE_TYPE"):
                    existing["VALUE_TYPE"] = str(entry["VALUE_TYPE"])

    def _uf_value(self, definition: dict, value):
        multiple = definition["MULTIPLE"] == "Y"
        values = value if isinstance(value, list) else (list(value.values()) if isinstance(value, dict) else [value])
        values = [v for v in values if v not in (None, "", False)]
        if definition["USER_TYPE_ID"] == "enumeration":
            ids = {item["ID"] for item in definition["LIST"]}
            values = [str(v) for v in values if str(v) in ids]
        elif definition["USER_TYPE_ID"] == "boolean":
            values = ["1" if str(v).upper() in ("1", "Y", "TRUE") else "0" for v in values]
        else:
            values = [str(v) for v in values]
        if multiple:
            return values
        return values[0] if values else None

    def _apply_fields(self, entity: str, record: dict, fields: dict) -> bool:
        schema = crm.SCHEMAS[entity]
        ufs = self.userfields[entity]
        changed = False
        for raw_key, value in (fields or {}).items():
            key = str(raw_key).upper()
            if key in crm.MULTI_FIELDS and key in schema:
                self._apply_multi(record, key, value)
                changed = True
            elif key in ufs:
                record[key] = self._uf_value(ufs[key], value)
                changed = True
            elif key in schema and not schema[key]["isReadOnly"] or key in ("COMPANY_ID", "CONTACT_ID"):
                if isinstance(value, (list, dict)):
                    continue
                if isinstance(value, bool):
                    value = "Y" if value else "N"
                record[key] = None if value is None or value == "" else str(value)
                changed = True
        if "PHONE" in schema:
            record["HAS_PHONE"] = "Y" if record.get("PHONE") else "N"
            record["HAS_EMAIL"] = "Y" if record.get("EMAIL") else "N"
        if entity == "deal" and "STAGE_ID" in record:
            semantic = crm.STAGE_SEMANTICS["deal"].get(record["STAGE_ID"].split(":")[-1], "P")
            record["STAGE_SEMANTIC_ID"] = semantic
            record["CLOSED"] = "N" if semantic == "P" else "Y"
        if entity == "lead" and "STATUS_ID" in record:
            record["STATUS_SEMANTIC_ID"] = crm.STAGE_SEMANTICS["lead"].get(record["STATUS_ID"], "P")
        return changed

    def _blank(self, entity: str, rid: int, user_id: int, when: datetime) -> dict:
        record = {name: None for name, spec in crm.SCHEMAS[entity].items() if name not in crm.MULTI_FIELDS}
        stamp = self.iso(when)
        record.update(ID=str(rid), DATE_CREATE=stamp, DATE_MODIFY=stamp, CREATED_BY_ID=str(user_id),
                      MODIFY_BY_ID=str(user_id), ASSIGNED_BY_ID=str(user_id), OPENED="Y")
        for name, definition in self.userfields[entity].items():
            record[name] = [] if definition["MULTIPLE"] == "Y" else None
        if entity in ("contact", "company", "lead"):
            record.update(HAS_PHONE="N", HAS_EMAIL="N", HAS_IMOL="N")
        if entity == "contact":
            record.update(EXPORT="Y", TYPE_ID="CLIENT", SOURCE_ID="SELF")
        if entity == "company":
            record.update(COMPANY_TYPE="CUSTOMER", CURRENCY_ID="RUB")
        if entity == "deal":
            record.update(STAGE_ID="NEW", CATEGORY_ID="0", CURRENCY_ID="RUB", OPPORTUNITY="0.00", IS_NEW="Y",
                          CLOSED="N", STAGE_SEMANTIC_ID="P", PROBABILITY=None, TYPE_ID="SALE",
                          BEGINDATE=self.iso(when.replace(hour=0, minute=0, second=0, microsecond=0)))
        if entity == "lead":
            record.update(STATUS_ID="NEW", STATUS_SEMANTIC_ID="P", CURRENCY_ID="RUB", OPPORTUNITY="0.00")
        return record

    def add_record(self, entity: str, fields: dict, user_id: int = 1, when: datetime | None = None,
                   fire: bool = True) -> int:
        with self.lock:
            rid = self._next(entity)
            record = self._blank(entity, rid, user_id, when or self.now())
            if entity == "company" and not (fields or {}).get("TITLE"):
                fields = {**(fields or {}), "TITLE": f"Компания №{rid}"}
            self._apply_fields(entity, record, fields)
            if "ASSIGNED_BY_ID" not in {str(k).upper() for k in (fields or {})}:
                record["ASSIGNED_BY_ID"] = str(user_id)
            self.records[entity][rid] = record
            if entity in crm.DOC_IDS:
                self._record_stage(entity, record, 1, when or self.now())
            if fire:
                self.fire(f"ONCRM{entity.upper()}ADD", str(rid), user_id)
            return rid

    def get_record(self, entity: str, rid) -> dict:
        try:
            record = self.records[entity].get(int(rid))
        except (TypeError, ValueError):
            raise legacy_crm_error("ID is not defined or invalid.") from None
        if record is None:
            raise not_found()
        return record

    def update_record(self, entity: str, rid, fields: dict, user_id: int = 1) -> bool:
        with self.lock:
            record = self.get_record(entity, rid)
            stage_field = "STAGE_ID" if entity == "deal" else "STATUS_ID"
            old_stage = record.get(stage_field)
            self._apply_fields(entity, record, fields)
            record["DATE_MODIFY"] = self.iso()
            record["MODIFY_BY_ID"] = str(user_id)
            if entity == "deal":
                record["IS_NEW"] = "N"
            self.fire(f"ONCRM{entity.upper()}UPDATE", record["ID"], user_id)
            if entity in crm.DOC_IDS and record.get(stage_field) != old_stage:
                semantic = record.get("STAGE_SEMANTIC_ID" if entity == "deal" else "STATUS_SEMANTIC_ID")
                self._record_stage(entity, record, 2 if semantic == "P" else 3, self.now())
                self._stage_entered(entity, int(record["ID"]), record.get(stage_field))
            return True

    def delete_record(self, entity: str, rid, user_id: int = 1) -> bool:
        with self.lock:
            record = self.get_record(entity, rid)
            del self.records[entity][int(record["ID"])]
            self.fire(f"ONCRM{entity.upper()}DELETE", record["ID"], user_id)
            return True

    def _record_stage(self, entity: str, record: dict, type_id: int, when: datetime) -> None:
        """A crm.stagehistory row: 1 created, 2 moved to an intermediate stage, 3 to a final one."""
        row = {"ID": self._next("stage_history"), "TYPE_ID": type_id, "OWNER_ID": int(record["ID"]),
               "CREATED_TIME": self.iso(when), "_entity": entity}
        if entity == "deal":
            row.update(CATEGORY_ID=int(record.get("CATEGORY_ID") or 0),
                       STAGE_SEMANTIC_ID=record.get("STAGE_SEMANTIC_ID"), STAGE_ID=record.get("STAGE_ID"))
        else:
            row.update(STATUS_SEMANTIC_ID=record.get("STATUS_SEMANTIC_ID"), STATUS_ID=record.get("STATUS_ID"))
        self.stage_history.append(row)

    # the ctl actions: a user working in the CRM
    def act_add(self, entity: str, fields: dict, user_id: int = 1) -> int:
        return self.add_record(entity, fields, user_id)

    def act_update(self, entity: str, entity_id: int, fields: dict, user_id: int = 1) -> bool:
        return self.update_record(entity, entity_id, fields, user_id)

    def act_delete(self, entity: str, entity_id: int, user_id: int = 1) -> bool:
        return self.delete_record(entity, entity_id, user_id)

    def act_move_stage(self, entity: str, entity_id: int, stage_id: str, user_id: int = 1) -> bool:
        field = "STAGE_ID" if entity == "deal" else "STATUS_ID"
        return self.update_record(entity, entity_id, {field: stage_id}, user_id)

    def act_close_deal(self, deal_id: int, won: bool, user_id: int = 1) -> bool:
        with self.lock:
            record = self.get_record("deal", deal_id)
            prefix = "" if record.get("CATEGORY_ID") in (None, "0") else f"C{record['CATEGORY_ID']}:"
            return self.update_record("deal", deal_id, {"STAGE_ID": prefix + ("WON" if won else "LOSE"),
                                                        "CLOSEDATE": self.iso()}, user_id)

    def add_activity(self, fields: dict, user_id: int = 1, fire: bool = True) -> int:
        with self.lock:
            aid = self._next("activity")
            stamp = self.iso()
            row = {name: None for name in crm.ACTIVITY_FIELDS}
            row.update(ID=str(aid), CREATED=stamp, LAST_UPDATED=stamp, AUTHOR_ID=str(user_id),
                       EDITOR_ID=str(user_id), PRIORITY="2", DESCRIPTION="", DESCRIPTION_TYPE="1",
                       NOTIFY_TYPE="0", NOTIFY_VALUE="0", SETTINGS=[], ORIGINATOR_ID=None, ORIGIN_ID=None)
            for key, value in fields.items():
                row[key] = value if key in ("COMMUNICATIONS", "BINDINGS", "SETTINGS") else \
                    (None if value is None else str(value))
            row.setdefault("BINDINGS", [{"OWNER_ID": row["OWNER_ID"], "OWNER_TYPE_ID": row["OWNER_TYPE_ID"]}])
            self.activities[aid] = row
            owner = self.records.get(crm.OWNER_TYPE_NAME.get(int(row["OWNER_TYPE_ID"] or 0), ""), {}) \
                .get(int(row["OWNER_ID"] or 0))
            if owner is not None and "LAST_ACTIVITY_TIME" in owner:
                owner["LAST_ACTIVITY_TIME"] = row["END_TIME"] or row["START_TIME"] or stamp
                owner["LAST_ACTIVITY_BY"] = row["RESPONSIBLE_ID"]
            if fire:
                self.fire("ONCRMACTIVITYADD", str(aid), user_id)
            return aid

    def act_call(self, owner_type, owner_id: int, user_id: int = 1, start: datetime | None = None,
                 end: datetime | None = None, completed: bool = True, direction: int = 2,
                 phone: str | None = None, duration: int = 120, also: tuple = ()) -> int:
        """A phone call logged in the CRM: a TYPE_ID 2 activity (DIRECTION 1 in, 2 out). `also`:
        more (owner type, id) the call is bound to (BINDINGS), as a call to a company's contact
        person is bound to the company too."""
        owner_type_id = owner_type if isinstance(owner_type, int) else crm.OWNER_TYPE[owner_type]
        with self.lock:
            start = start or self.now()
            end = end or (start + timedelta(seconds=duration))
            owner = self.records[crm.OWNER_TYPE_NAME[owner_type_id]].get(int(owner_id)) or {}
            if phone is None:
                phone = next((e["VALUE"] for e in owner.get("PHONE") or []), "")
            incoming = int(direction) == 1
            aid = self.add_activity({
                "OWNER_ID": owner_id, "OWNER_TYPE_ID": owner_type_id, "TYPE_ID": 2,
                "PROVIDER_ID": "VOXIMPLANT_CALL", "PROVIDER_TYPE_ID": "CALL", "PROVIDER_GROUP_ID": None,
                "ASSOCIATED_ENTITY_ID": "0",
                "SUBJECT": ("Входящий звонок " if incoming else "Исходящий звонок ") + phone,
                "START_TIME": self.iso(start), "END_TIME": self.iso(end), "DEADLINE": self.iso(end),
                "COMPLETED": "Y" if completed else "N", "STATUS": "2" if completed else "1",
                "RESPONSIBLE_ID": user_id, "DIRECTION": direction, "LOCATION": "",
                "COMMUNICATIONS": [{"TYPE": "PHONE", "VALUE": phone, "ENTITY_ID": str(owner_id),
                                    "ENTITY_TYPE_ID": str(owner_type_id)}],
                "BINDINGS": [{"OWNER_ID": str(i), "OWNER_TYPE_ID": str(t if isinstance(t, int) else crm.OWNER_TYPE[t])}
                             for t, i in [(owner_type_id, owner_id), *also]],
            }, user_id)
            call_id = f"externalCall.{secrets.token_hex(8)}"
            event = {"CALL_ID": call_id, "CALL_TYPE": "2" if incoming else "1", "PHONE_NUMBER": phone,
                     "PORTAL_NUMBER": "", "PORTAL_USER_ID": str(user_id),
                     "CALL_DURATION": str(int((end - start).total_seconds())) if completed else "0",
                     "CALL_START_DATE": self.iso(start), "COST": "0.0000", "COST_CURRENCY": "RUR",
                     "CALL_FAILED_CODE": "200" if completed else "304",
                     "CALL_FAILED_REASON": "Success call" if completed else "Missed call",
                     "CRM_ACTIVITY_ID": str(aid)}
            self.call_statistics.append({"ID": str(len(self.call_statistics) + 1), **event,
                                         "EXTERNAL_CALL_ID": None, "CALL_CATEGORY": "external",
                                         "CRM_ENTITY_TYPE": crm.OWNER_TYPE_NAME[owner_type_id].upper(),
                                         "CRM_ENTITY_ID": str(owner_id), "CALL_RECORD_URL": "",
                                         "REST_APP_ID": None, "CALL_VOTE": None, "COMMENT": None})
            self.fire("ONVOXIMPLANTCALLEND", None, user_id, data=event)
            return aid
