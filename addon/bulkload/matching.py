"""Matching bulk-load rows to CRM clients by phone or e-mail (batched portal calls), and refusing a
second row for a client already in the file."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Protocol

from addon.bulkload.rows import RowDraft, normalize_import_phone

FINDBYCOMM_VALUES = 20  # crm.duplicate.findbycomm takes at most 20 values per call
BATCH_SIZE = 50  # commands per `batch` call


class Batcher(Protocol):
    """The part of addon.bitrix.client.PortalClient that matching needs."""

    def batch(self, commands: dict[str, tuple[str, dict]], halt: bool = False) -> Any: ...


def match_drafts(client: Batcher, drafts: list[RowDraft], region: str = "RU") -> None:
    """Resolve phones and e-mails to client IDs: batched crm.duplicate.findbycomm (20 values a
    command, 50 commands a call) gives the candidates, whose PHONE/EMAIL are then read back
    (crm.*.list by `@ID`, 50 a command) to know which value is whose. Rows that match nothing, or
    several clients, get an error. Rows with an ID cost no call here: a missing ID is reported by
    the portal when the row is applied (a 100,000-row file of IDs previews without a single call)."""
    for entity_type in ("contact", "company"):
        rows = [d for d in drafts if d.valid and d.entity_type == entity_type and d.match_by in ("phone", "email")]
        if not rows:
            continue
        by_comm: dict[str, dict[str, list[RowDraft]]] = {"phone": {}, "email": {}}
        for d in rows:
            by_comm[d.match_by].setdefault(d.match_value, []).append(d)
        candidates: set[int] = set()
        for kind, values in by_comm.items():
            candidates |= _find_by_comm(client, entity_type, kind, list(values))
        found = _read_comms(client, entity_type, sorted(candidates), region)
        owners: dict[tuple[str, str], set[int]] = {}
        for entity_id, comms in found.items():
            for kind_value in comms:
                owners.setdefault(kind_value, set()).add(entity_id)
        for d in rows:
            ids = owners.get((d.match_by, d.match_value), set())
            if not ids:
                d.errors.append(f"no {entity_type} with {d.match_by} {d.match_value}")
            elif len(ids) > 1:
                d.errors.append(f"several {entity_type}s have {d.match_by} {d.match_value}: IDs "
                                + ", ".join(str(i) for i in sorted(ids)))
            else:
                d.entity_id = next(iter(ids))


def _find_by_comm(client: Batcher, entity_type: str, kind: str, values: list[str]) -> set[int]:
    commands = {}
    for i in range(0, len(values), FINDBYCOMM_VALUES):
        chunk = values[i:i + FINDBYCOMM_VALUES]
        commands[f"f{i // FINDBYCOMM_VALUES}"] = ("crm.duplicate.findbycomm", {
            "type": kind.upper(), "values": chunk, "entity_type": entity_type.upper()})
    ids: set[int] = set()
    for part in _chunks(commands, BATCH_SIZE):
        result = client.batch(part)
        for key, value in result.results.items():
            if isinstance(value, dict):
                ids.update(int(v) for v in value.get(entity_type.upper(), []) or [])
        _raise_first_error(result)
    return ids


def _read_comms(client: Batcher, entity_type: str, ids: list[int], region: str) -> dict[int, set[tuple[str, str]]]:
    """{entity ID: {("phone", E.164), ("email", lower-case)}} for the IDs that exist."""
    method = f"crm.{entity_type}.list"
    commands = {}
    for i in range(0, len(ids), 50):  # a list page holds 50 rows
        commands[f"l{i // 50}"] = (method, {"filter": {"@ID": ids[i:i + 50]},
                                            "select": ["ID", "PHONE", "EMAIL"], "start": -1})
    found: dict[int, set[tuple[str, str]]] = {}
    for part in _chunks(commands, BATCH_SIZE):
        result = client.batch(part)
        _raise_first_error(result)
        for rows in result.results.values():
            for item in rows or []:
                comms: set[tuple[str, str]] = set()
                for entry in item.get("PHONE") or []:
                    phone = normalize_import_phone(entry.get("VALUE", ""), region)
                    if phone:
                        comms.add(("phone", phone))
                for entry in item.get("EMAIL") or []:
                    if entry.get("VALUE"):
                        comms.add(("email", str(entry["VALUE"]).strip().lower()))
                found[int(item["ID"])] = comms
    return found


def _raise_first_error(result: Any) -> None:
    errors = getattr(result, "errors", None) or {}
    if errors:
        raise next(iter(errors.values()))


def _chunks(commands: dict, size: int) -> Iterator[dict]:
    items = list(commands.items())
    for i in range(0, len(items), size):
        yield dict(items[i:i + size])


def mark_duplicates(drafts: Iterable[RowDraft]) -> None:
    """One client, one row: a later row for a client already in the file is refused."""
    first: dict[tuple[str, int], int] = {}
    for d in drafts:
        if not d.valid or d.entity_id is None:
            continue
        key = (d.entity_type, d.entity_id)
        if key in first:
            d.errors.append(f"the same {d.entity_type} {d.entity_id} is already in row {first[key]}")
        else:
            first[key] = d.row_no

