"""Event and robot intake: parse the portal's PHP-bracket forms, verify them, store them.

Nothing here calls Bitrix24: an event is verified against the stored application_token of its
member_id (constant time), stored as a StoredEvent and acknowledged. The worker reads it later.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from addon.crypto import constant_time_equal
from addon.models import PORTAL_UNINSTALLED, Portal, StoredEvent

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART_RE = re.compile(r"\[([^\[\]]*)\]")

# What goes into a stored payload must never hold a credential in clear.
SECRET_AUTH_KEYS = ("access_token", "refresh_token", "application_token")

ENTITY_OF_EVENT = (
    ("ONCRMCONTACT", "contact"), ("ONCRMCOMPANY", "company"), ("ONCRMDEAL", "deal"),
    ("ONCRMLEAD", "lead"), ("ONCRMACTIVITY", "activity"), ("ONVOXIMPLANTCALLEND", "call"),
)


class IntakeError(Exception):
    """A refused event: `status` is the HTTP answer (400 malformed, 401 forged or unknown)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Intake:
    event_id: int | None
    duplicate: bool
    event_name: str
    portal_id: int


def parse_php_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """PHP's parse_str for already-decoded pairs: `a[b][c]=1`, `a[]=x` (append), `a[0]=x`.
    Arrays whose keys are exactly 0..n-1 become lists, as PHP's json_encode would emit them."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        m = _KEY_RE.match(raw_key)
        if not m:
            raise ValueError(f"malformed form key {raw_key!r}")
        path = [m.group(1)] + _PART_RE.findall(m.group(2) or "")
        node: Any = root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if part == "":
                part = str(_next_index(node))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return _listify(root)


def _next_index(node: dict) -> int:
    ints = [int(k) for k in node if k.isdigit()]
    return max(ints) + 1 if ints else 0


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v) for k, v in node.items()}
    if out and all(k.isdigit() for k in out) and sorted(int(k) for k in out) == list(range(len(out))):
        return [out[str(i)] for i in range(len(out))]
    return out


def scrub(form: dict[str, Any]) -> dict[str, Any]:
    """The form without credentials (tokens are never stored in clear)."""
    clean = dict(form)
    auth = clean.get("auth")
    if isinstance(auth, dict):
        clean["auth"] = {k: v for k, v in auth.items() if k not in SECRET_AUTH_KEYS}
    return clean


def entity_of(event_name: str, form: dict[str, Any]) -> tuple[str | None, int | None]:
    entity_type = next((t for prefix, t in ENTITY_OF_EVENT if event_name.startswith(prefix)), None)
    data = form.get("data") if isinstance(form.get("data"), dict) else {}
    fields = data.get("FIELDS") if isinstance(data.get("FIELDS"), dict) else {}
    raw_id = fields.get("ID")
    if raw_id is None and entity_type == "call":
        raw_id = data.get("CRM_ACTIVITY_ID")
    try:
        entity_id = int(raw_id) if raw_id not in (None, "") else None
    except (TypeError, ValueError):
        entity_id = None
    return entity_type, entity_id


def dedupe_key_of(event_name: str, form: dict[str, Any], entity_id: int | None) -> str:
    """Bitrix24 sends no delivery ID: the same event name, object and timestamp is the same change."""
    ts = str(form.get("ts") or "")
    if entity_id is not None and ts:
        return f"{event_name}:{entity_id}:{ts}"
    digest = hashlib.sha256(json.dumps(scrub(form), sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"{event_name}:{digest[:40]}"


def verify(session, form: dict[str, Any]) -> Portal:
    """The portal the form comes from, or IntakeError(401). A portal that has no application_token
    yet (a UI install: the token comes with the first event) adopts the first one whose access
    token the portal confirms."""
    auth = form.get("auth")
    if not isinstance(auth, dict):
        raise IntakeError(400, "missing auth[...]")
    member_id = auth.get("member_id")
    token = auth.get("application_token")
    if not isinstance(member_id, str) or not member_id or not isinstance(token, str) or not token:
        raise IntakeError(400, "missing auth[member_id] or auth[application_token]")
    portal = session.scalar(select(Portal).where(Portal.member_id == member_id.lower()))
    if portal is None:
        raise IntakeError(401, "unknown portal")
    if portal.status == PORTAL_UNINSTALLED:
        raise IntakeError(401, "the app is not installed on this portal")
    cipher = session.info["nezabyt_cipher"]
    stored = cipher.decrypt(portal.application_token_enc)
    if stored is None:
        domain = str(auth.get("domain") or "").lower()
        if not constant_time_equal(domain, (portal.domain or "").lower()):
            raise IntakeError(401, "unknown application token")
        # Knowing a portal's member_id and domain proves nothing. The first token is adopted only
        # when the event's access token works on that portal: one call, once per installation.
        # Events with no tokens (fired by automation) wait for reconcile to pick their change up.
        if not _access_token_works(portal, auth.get("access_token")):
            raise IntakeError(401, "application token not confirmed yet")
        portal.application_token_enc = cipher.encrypt(token)
        return portal
    if not constant_time_equal(stored, token):
        raise IntakeError(401, "wrong application token")
    return portal


def _access_token_works(portal: Portal, access_token: Any) -> bool:
    if not isinstance(access_token, str) or not access_token:
        return False
    from addon.portal_client import PortalError, user_client

    try:
        user_client(portal.client_endpoint, access_token).call("app.info")
    except PortalError:
        return False
    return True


def store_event(session, form: dict[str, Any], *, source: str = "online") -> Intake:
    """Verify and store an ordinary event (the caller commits). Duplicates are acknowledged."""
    event_name = form.get("event")
    if not isinstance(event_name, str) or not event_name.strip():
        raise IntakeError(400, "missing event")
    event_name = event_name.strip().upper()
    portal = verify(session, form)
    entity_type, entity_id = entity_of(event_name, form)
    if entity_type in ("contact", "company", "deal", "lead", "activity") and entity_id is None:
        raise IntakeError(400, "missing data[FIELDS][ID]")
    return _insert(session, portal, StoredEvent(
        portal_id=portal.id, event_name=event_name, entity_type=entity_type, entity_id=entity_id,
        payload=scrub(form), source=source, dedupe_key=dedupe_key_of(event_name, form, entity_id)))


def store_robot_call(session, code: str, form: dict[str, Any]) -> Intake:
    """Verify and store a robot invocation as ROBOT:<code>; its event_token makes it unique."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", code or ""):
        raise IntakeError(400, "bad robot code")
    event_token = form.get("event_token")
    if not isinstance(event_token, str) or not event_token:
        raise IntakeError(400, "missing event_token")
    portal = verify(session, form)
    entity_type, entity_id = None, None
    document = form.get("document_id")
    if isinstance(document, list) and len(document) >= 3:
        m = re.fullmatch(r"([A-Z_]+?)_(\d+)", str(document[2]))
        if m:
            entity_type, entity_id = m.group(1).lower(), int(m.group(2))
    digest = hashlib.sha256(event_token.encode()).hexdigest()[:48]
    return _insert(session, portal, StoredEvent(
        portal_id=portal.id, event_name=f"ROBOT:{code}", entity_type=entity_type, entity_id=entity_id,
        payload=scrub(form), source="robot", dedupe_key=f"robot:{digest}"))


def _insert(session, portal: Portal, event: StoredEvent) -> Intake:
    existing = session.scalar(select(StoredEvent.id).where(
        StoredEvent.portal_id == portal.id, StoredEvent.dedupe_key == event.dedupe_key))
    if existing is not None:
        return Intake(existing, True, event.event_name, portal.id)
    try:
        with session.begin_nested():
            session.add(event)
            session.flush()
    except IntegrityError:  # a concurrent delivery of the same change won the race
        existing = session.scalar(select(StoredEvent.id).where(
            StoredEvent.portal_id == portal.id, StoredEvent.dedupe_key == event.dedupe_key))
        return Intake(existing, True, event.event_name, portal.id)
    return Intake(event.id, False, event.event_name, portal.id)


def utc_from_ts(ts: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(int(ts), dt.timezone.utc).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError):
        return None
