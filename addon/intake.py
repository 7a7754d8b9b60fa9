"""Event and robot intake: parse the portal's PHP-bracket forms, verify them, store them.

Nothing here calls Bitrix24: an event is verified against the stored application_token of its
member_id (constant time), stored as a StoredEvent and acknowledged. The worker reads it later.

This is the hot path of the web app (issue 7: 1,000 events/s): Core statements only, one SELECT
of the portal and one INSERT ... ON CONFLICT DO NOTHING per event, the decrypted token cached.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from addon.crypto import TokenCipher, constant_time_equal
from addon.models import PORTAL_UNINSTALLED, Portal, StoredEvent, utcnow

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


# What verification needs of a portal, read with one Core statement per event (no ORM): a change
# of status or token is seen by the very next event.
_PORTAL_COLUMNS = (Portal.__table__.c.id, Portal.__table__.c.status, Portal.__table__.c.domain,
                   Portal.__table__.c.client_endpoint, Portal.__table__.c.application_token_enc)
_portal_by_member = select(*_PORTAL_COLUMNS).where(Portal.__table__.c.member_id == bindparam("member_id"))
_portal_by_id = select(*_PORTAL_COLUMNS).where(Portal.__table__.c.id == bindparam("portal_id"))
_event_id_by_key = select(StoredEvent.__table__.c.id).where(
    StoredEvent.__table__.c.portal_id == bindparam("portal_id"),
    StoredEvent.__table__.c.dedupe_key == bindparam("dedupe_key"))


@lru_cache(maxsize=4096)
def _plain_application_token(cipher: TokenCipher, token_enc: str) -> str | None:
    """The decrypted application token, cached per process. Keyed by the encrypted text itself:
    Fernet output is randomised, so a new token (or a new secret key: another cipher) is a new key
    and is decrypted afresh; only the decryption is cached, never the decision."""
    return cipher.decrypt(token_enc)


def verify(conn, cipher: TokenCipher, form: dict[str, Any]) -> int:
    """The id of the portal the form comes from, or IntakeError(401). A portal that has no
    application_token yet (a UI install: the token comes with the first event) adopts the first
    one whose access token the portal confirms."""
    auth = form.get("auth")
    if not isinstance(auth, dict):
        raise IntakeError(400, "missing auth[...]")
    member_id = auth.get("member_id")
    token = auth.get("application_token")
    if not isinstance(member_id, str) or not member_id or not isinstance(token, str) or not token:
        raise IntakeError(400, "missing auth[member_id] or auth[application_token]")
    portal = conn.execute(_portal_by_member, {"member_id": member_id.lower()}).first()
    if portal is None:
        raise IntakeError(401, "unknown portal")
    if portal.status == PORTAL_UNINSTALLED:
        raise IntakeError(401, "the app is not installed on this portal")
    if portal.application_token_enc is None:
        return _adopt_first_token(conn, cipher, portal, auth, token)
    if not constant_time_equal(_plain_application_token(cipher, portal.application_token_enc), token):
        raise IntakeError(401, "wrong application token")
    return portal.id


def _adopt_first_token(conn, cipher: TokenCipher, portal, auth: dict[str, Any], token: str) -> int:
    domain = str(auth.get("domain") or "").lower()
    if not constant_time_equal(domain, (portal.domain or "").lower()):
        raise IntakeError(401, "unknown application token")
    # Knowing a portal's member_id and domain proves nothing. The first token is adopted only
    # when the event's access token works on that portal: one call, once per installation.
    # Events with no tokens (fired by automation) wait for reconcile to pick their change up.
    if not _access_token_works(portal.client_endpoint, auth.get("access_token")):
        raise IntakeError(401, "application token not confirmed yet")
    table = Portal.__table__
    adopted = conn.execute(update(table).where(table.c.id == portal.id, table.c.application_token_enc.is_(None))
                           .values(application_token_enc=cipher.encrypt(token)))
    if adopted.rowcount == 1:
        return portal.id
    # Two first events raced and the other one's token was adopted: this one must match it.
    now = conn.execute(_portal_by_id, {"portal_id": portal.id}).first()
    if now is None or now.application_token_enc is None or now.status == PORTAL_UNINSTALLED:
        raise IntakeError(401, "unknown portal")
    if not constant_time_equal(_plain_application_token(cipher, now.application_token_enc), token):
        raise IntakeError(401, "wrong application token")
    return portal.id


def _access_token_works(client_endpoint: str, access_token: Any) -> bool:
    if not isinstance(access_token, str) or not access_token:
        return False
    from addon.portal_client import PortalError, user_client

    try:
        user_client(client_endpoint, access_token).call("app.info")
    except PortalError:
        return False
    return True


def store_event(engine: Engine, cipher: TokenCipher, form: dict[str, Any], *, source: str = "online") -> Intake:
    """Verify and store an ordinary event, committed before this returns. Duplicates are
    acknowledged. `engine` is best one in AUTOCOMMIT (see `intake_engine`): each statement is
    then its own transaction and no BEGIN/COMMIT round trips are spent."""
    event_name = form.get("event")
    if not isinstance(event_name, str) or not event_name.strip():
        raise IntakeError(400, "missing event")
    event_name = event_name.strip().upper()
    entity_type, entity_id = entity_of(event_name, form)
    with engine.connect() as conn:
        portal_id = verify(conn, cipher, form)
        if entity_type in ("contact", "company", "deal", "lead", "activity") and entity_id is None:
            raise IntakeError(400, "missing data[FIELDS][ID]")
        return _insert(conn, dict(
            portal_id=portal_id, event_name=event_name, entity_type=entity_type, entity_id=entity_id,
            payload=scrub(form), source=source, dedupe_key=dedupe_key_of(event_name, form, entity_id)))


def store_robot_call(engine: Engine, cipher: TokenCipher, code: str, form: dict[str, Any]) -> Intake:
    """Verify and store a robot invocation as ROBOT:<code>; its event_token makes it unique."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", code or ""):
        raise IntakeError(400, "bad robot code")
    event_token = form.get("event_token")
    if not isinstance(event_token, str) or not event_token:
        raise IntakeError(400, "missing event_token")
    entity_type, entity_id = None, None
    document = form.get("document_id")
    if isinstance(document, list) and len(document) >= 3:
        m = re.fullmatch(r"([A-Z_]+?)_(\d+)", str(document[2]))
        if m:
            entity_type, entity_id = m.group(1).lower(), int(m.group(2))
    digest = hashlib.sha256(event_token.encode()).hexdigest()[:48]
    with engine.connect() as conn:
        portal_id = verify(conn, cipher, form)
        return _insert(conn, dict(
            portal_id=portal_id, event_name=f"ROBOT:{code}", entity_type=entity_type, entity_id=entity_id,
            payload=scrub(form), source="robot", dedupe_key=f"robot:{digest}"))


def intake_engine(engine: Engine) -> Engine:
    """The engine the receivers store through: the same pool, in AUTOCOMMIT. Intake runs single
    statements that are each atomic (the insert with its conflict clause), so an explicit
    transaction would only add BEGIN and COMMIT round trips."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


# The columns intake writes. received_at and attempts are given, not left to the model's
# Python-side defaults, because the statement below is SQL text (defaults would not apply).
_INSERT_COLUMNS = ("portal_id", "event_name", "entity_type", "entity_id", "payload", "source", "dedupe_key",
                   "received_at", "attempts")


@lru_cache(maxsize=None)
def _insert_statement():
    """INSERT ... ON CONFLICT (portal_id, dedupe_key) DO NOTHING RETURNING id: one statement stores
    a new event, or does nothing for a change already stored (PostgreSQL and SQLite >= 3.35 share
    this syntax).

    Written as text() with the columns' own types rather than built with the dialects'
    insert().on_conflict_do_nothing(): SQLAlchemy 2.0 never caches the compiled form of those
    (sqlalchemy#10445, their ON CONFLICT clause has no cache key), and compiling it on every event
    cost about 0.4 ms of CPU, a third of the whole path. A text() statement is compiled once."""
    table = StoredEvent.__table__
    unique = next(c for c in table.constraints if getattr(c, "name", None) == "uq_stored_event_dedupe")
    sql = (f"INSERT INTO {table.name} ({', '.join(_INSERT_COLUMNS)}) "
           f"VALUES ({', '.join(':' + name for name in _INSERT_COLUMNS)}) "
           f"ON CONFLICT ({', '.join(c.name for c in unique.columns)}) DO NOTHING RETURNING {table.c.id.name}")
    return (text(sql).bindparams(*(bindparam(name, type_=table.c[name].type) for name in _INSERT_COLUMNS))
            .columns(table.c.id))


def _insert(conn, values: dict[str, Any]) -> Intake:
    try:
        new_id = conn.execute(_insert_statement(),
                              {**values, "received_at": utcnow(), "attempts": 0}).scalar()
        if new_id is None:  # the conflict clause fired: the same change is already stored
            existing = conn.execute(_event_id_by_key, {"portal_id": values["portal_id"],
                                                       "dedupe_key": values["dedupe_key"]}).scalar()
            conn.commit()
            return Intake(existing, True, values["event_name"], values["portal_id"])
        conn.commit()
    except IntegrityError:
        # Not a duplicate (the conflict clause covers that): the portal row went away between
        # verification and insert (an uninstall with CLEAN=1 purged it).
        conn.rollback()
        if conn.execute(_portal_by_id, {"portal_id": values["portal_id"]}).first() is None:
            raise IntakeError(401, "unknown portal") from None
        raise
    return Intake(new_id, False, values["event_name"], values["portal_id"])


def utc_from_ts(ts: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(int(ts), dt.timezone.utc).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError):
        return None
