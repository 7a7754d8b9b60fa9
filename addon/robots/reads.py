"""What the robots read from the portal, cached for one pass: the items (in batches), the active
users and the org chart (for a supervisor), a field's enumeration labels, a pipeline's stages and
an item's stage history. A refused read counts as "nothing there" only when `reads_as_empty` says
so; any other refusal is raised, and the call or timer is tried again on a later pass."""
from __future__ import annotations

import logging
from typing import Iterable

from addon.bitrix import directory
from addon.bitrix.client import portal_client
from addon.bitrix.errors import PortalError, is_not_found, is_permanent
from addon.robots.calls import OWNER_TYPE, STAGE_FIELD, as_int
from addon.rules import find_supervisor

log = logging.getLogger(__name__)

def reads_as_empty(exc: PortalError) -> bool:
    """Whether a refused read may be taken as "nothing there": the item is not found, the method
    does not exist on this portal, or the app was not granted its scope. Anything else — the rate
    limit, a 5xx, the network, a blocked or unpaid portal — must not turn into empty data a robot
    then decides on: it is raised, and the robot call is tried again on a later pass."""
    return is_not_found(exc) or str(exc.code) in ("ERROR_METHOD_NOT_FOUND", "insufficient_scope")


class PortalReads:
    """One portal's reads for one pass, with their cache; the client is opened on first use."""

    def __init__(self, services, portal_id: int, client=None):
        self.services = services
        self.portal_id = portal_id
        self._client = client
        self._items: dict[tuple[str, int], dict | None] = {}
        self._errors: dict[tuple[str, int], Exception] = {}
        self._users: dict[int, dict] | None = None
        self._org = None
        self._fields: dict[str, dict] = {}
        self._stages: dict[str, list[dict]] = {}

    @property
    def client(self):
        if self._client is None:
            self._client = portal_client(self.services, self.portal_id)
            self._own_client = True
        return self._client

    def close(self) -> None:
        if getattr(self, "_own_client", False):
            self._client.close()

    def prefetch(self, documents: Iterable[tuple[str, int]]) -> None:
        wanted: dict[str, list[int]] = {}
        for document_type, entity_id in documents:
            if (document_type, entity_id) not in self._items:
                wanted.setdefault(document_type, []).append(entity_id)
        for document_type, ids in wanted.items():
            for entity_id, item in self.client.get_many(f"crm.{document_type}.get", ids).items():
                if isinstance(item, dict):
                    self._items[(document_type, entity_id)] = item
                elif is_permanent(item):  # deleted (or no longer ours to see): the item is gone
                    self._items[(document_type, entity_id)] = None
                else:  # a struggling portal says nothing about the item: ask again next pass
                    self._errors[(document_type, entity_id)] = item

    def item(self, document_type: str, entity_id: int) -> dict | None:
        """The item as the portal has it, None if it is gone; raises the portal's error if unknown."""
        key = (document_type, entity_id)
        if key not in self._items and key not in self._errors:
            self.prefetch([key])
        if key in self._errors:
            raise self._errors.pop(key)
        return self._items.get(key)

    def forget(self, document_type: str, entity_id: int) -> None:
        self._items.pop((document_type, entity_id), None)

    def users(self) -> dict[int, dict]:
        """Active users of the portal (deactivated ones are simply not here)."""
        if self._users is None:
            self._users = directory.active_users(self.client)
        return self._users

    def user_name(self, user_id: int | None) -> str:
        row = self.users().get(int(user_id)) if user_id else None
        return directory.full_name(row, user_id) if user_id else "—"

    def org(self):
        if self._org is None:
            self._org = directory.org(self.client, list(self.users().values()))
        return self._org

    def supervisor(self, user_id: int | None) -> int | None:
        try:
            org = self.org()
        except PortalError as exc:
            if not reads_as_empty(exc):
                raise  # the rate limit, a 5xx, the network: the robot call is tried again later
            log.warning("no supervisor lookup on portal %s: %s", self.portal_id, exc)
            return None
        return find_supervisor(org, user_id)

    def field_labels(self, document_type: str, field_code: str) -> dict[str, str]:
        """Enumeration item ID -> label of a field (from crm.<type>.fields)."""
        if document_type not in self._fields:
            try:
                self._fields[document_type] = self.client.call(f"crm.{document_type}.fields") or {}
            except PortalError as exc:
                if not reads_as_empty(exc):
                    raise
                self._fields[document_type] = {}
        spec = self._fields[document_type].get(field_code) or self._fields[document_type].get(field_code.upper()) or {}
        return {str(i.get("ID")): str(i.get("VALUE")) for i in spec.get("items") or [] if isinstance(i, dict)}

    def stages(self, document_type: str, item: dict) -> list[dict]:
        """The item's pipeline stages in order (crm.status.list)."""
        if document_type == "lead":
            entity = "STATUS"
        else:
            category = as_int(item.get("CATEGORY_ID")) or 0
            entity = "DEAL_STAGE" if category == 0 else f"DEAL_STAGE_{category}"
        if entity not in self._stages:
            try:
                rows = self.client.call("crm.status.list", {"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}})
            except PortalError as exc:
                if not reads_as_empty(exc):
                    raise
                rows = []
            self._stages[entity] = sorted(rows or [], key=lambda r: as_int(r.get("SORT")) or 0)
        return self._stages[entity]

    def first_stage(self, document_type: str, item: dict) -> str | None:
        rows = self.stages(document_type, item)
        return str(rows[0]["STATUS_ID"]) if rows else None

    def stage_history(self, document_type: str, entity_id: int) -> list[str]:
        """The stages the item entered, newest first (crm.stagehistory.list); empty if unknown."""
        try:
            result = self.client.call("crm.stagehistory.list", {
                "entityTypeId": OWNER_TYPE[document_type], "order": {"ID": "DESC"},
                "filter": {"OWNER_ID": int(entity_id)}})
        except PortalError as exc:  # an older portal without the method: callers fall back
            if not reads_as_empty(exc):
                raise
            return []
        rows = result.get("items", []) if isinstance(result, dict) else result or []
        return [str(r.get("STAGE_ID") or r.get("STATUS_ID") or "") for r in rows if isinstance(r, dict)]

    def previous_stage(self, document_type: str, item: dict, explicit: str = "") -> str | None:
        """Where to send an item back: the robot's setting, else the stage it came from (stage
        history), else the in-progress stage before the current one in the pipeline."""
        if explicit:
            return explicit
        current = str(item.get(STAGE_FIELD[document_type]) or "")
        for stage in self.stage_history(document_type, int(item["ID"])):
            if stage and stage != current:
                return stage
        rows = self.stages(document_type, item)
        codes = [str(r["STATUS_ID"]) for r in rows]
        if current not in codes:
            return None
        before = [r for r in rows[:codes.index(current)] if (r.get("SEMANTICS") or "P") in ("P", "", None)]
        return str(before[-1]["STATUS_ID"]) if before else None
