"""Event and robot intake: parse the portal's PHP-bracket forms, verify them, store them.

Nothing here calls Bitrix24: an event is verified against the stored application_token of its
member_id (constant time), stored as a StoredEvent and acknowledged. The worker reads it later.

This is the hot path of the web app (issue 7: 1,000 events/s): Core statements only, one SELECT
of the portal and one INSERT ... ON CONFLICT DO NOTHING per event, the decrypted token cached.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from addon.crypto import TokenCipher, constant_time_equal
from addon.ids import parse_id
from addon.models import PORTAL_UNINSTALLED, Portal, StoredEvent, utcnow
from addon.robots.registry import parse_robot_code

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART_RE = re.compile(r"\[([^\[\]]*)\]")
# PHP's own max_input_nesting_level: no Bitrix24 form comes near it (data[FIELDS][ID] is 2 deep),
# and a deeper key would only cost recursion.
MAX_FORM_NESTING = 64

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
        if raw_key.count("[") > MAX_FORM_NESTING:
            raise ValueError(f"form key nested deeper than {MAX_FORM_NESTING} levels")
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
    return entity_type, parse_id(raw_id)


def dedupe_key_of(event_name: str, form: dict[str, Any], entity_id: int | None) -> str:
    """Bitrix24 sends no delivery ID: the same event name, object and timestamp is the same change."""
    ts = str(form.get("ts") or "")
    if entity_id is not None and ts:
        return fitted_key(f"{event_name}:{entity_id}:{ts}")
    digest = hashlib.sha256(json.dumps(scrub(form), sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return fitted_key(f"{event_name}:{digest[:40]}")


def fitted_key(key: str) -> str:
    """`key` as it fits the dedupe_key column: a longer one (a forged or odd `ts`) keeps its start
    and ends in the sha256 of the whole, so two long keys that differ anywhere stay two keys; cut
    short, they would collide and the second event would be dropped as a duplicate."""
    if len(key) <= DEDUPE_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[:DEDUPE_KEY_LENGTH - len(digest) - 1]}#{digest}"


_portal = Portal.__table__
_event = StoredEvent.__table__
EVENT_NAME_LENGTH = _event.c.event_name.type.length
DEDUPE_KEY_LENGTH = _event.c.dedupe_key.type.length
# What verification needs of a portal, read with Core (no ORM).
_PORTAL_COLUMNS = (_portal.c.id, _portal.c.status, _portal.c.domain, _portal.c.client_endpoint,
                   _portal.c.application_token_enc)
_portal_by_member = select(*_PORTAL_COLUMNS).where(_portal.c.member_id == bindparam("member_id"))
_portal_by_id = select(*_PORTAL_COLUMNS).where(_portal.c.id == bindparam("portal_id"))
_event_id_by_key = select(_event.c.id).where(_event.c.portal_id == bindparam("portal_id"),
                                             _event.c.dedupe_key == bindparam("dedupe_key"))
# The columns intake writes. received_at and attempts are given, not left to the model's
# Python-side defaults: the inserts below are SQL text, to which those defaults do not apply.
_INSERT_COLUMNS = ("portal_id", "event_name", "entity_type", "entity_id", "payload", "source", "dedupe_key",
                   "received_at", "attempts")
_ID_REQUIRED = ("contact", "company", "deal", "lead", "activity")


@dataclass(frozen=True)
class _KnownPortal:
    """A portal this process has verified an event of: its id, its encrypted application token as
    stored then, and that token decrypted."""
    portal_id: int
    token_enc: str
    token: str


class EventIntake:
    """The receivers' store, one per web app (so per process): verifies and stores events and robot
    calls, each committed before the call returns (the answer is an acknowledgement).

    The usual event costs ONE statement, in AUTOCOMMIT: INSERT ... SELECT ... FROM portal WHERE the
    portal still has the id, status and encrypted application token this process verified last,
    ON CONFLICT (portal_id, dedupe_key) DO NOTHING RETURNING id. The token itself is compared in
    Python, in constant time, with the one decrypted then. A portal uninstalled, purged or given a
    new token since no longer matches the guard, so a change is seen by the very next event: nothing
    is inserted and the full path runs — SELECT of the portal, decryption (cached by the encrypted
    text), verification, plain insert — as it does for a duplicate, a portal's first event, or a
    portal this process has not seen yet."""

    def __init__(self, engine: Engine, cipher: TokenCipher, pace_for: Callable[[int], Any] | None = None):
        # Every statement here is atomic on its own: a transaction would only add BEGIN and COMMIT
        # round trips. Same pool as the rest of the app.
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.cipher = cipher
        # The portal's one request budget (addon.bitrix.pace.shared_pace) for the first-token check,
        # shared with the worker and the settings page: a burst of first events never overruns it.
        self.pace_for = pace_for
        # Fernet output is randomised, so a new token (or secret key) is a new encrypted text:
        # caching by that text never serves a stale token, only saves the decryption (~0.1 ms).
        self._decrypt = lru_cache(maxsize=1024)(cipher.decrypt)
        self._known: dict[str, _KnownPortal] = {}
        self._insert = _insert_statement()
        self._guarded_insert = _guarded_insert_statement(engine.dialect)

    def store_event(self, form: dict[str, Any], *, source: str = "online") -> Intake:
        """Verify and store an ordinary event. Duplicates are acknowledged."""
        event_name = form.get("event")
        if not isinstance(event_name, str) or not event_name.strip():
            raise IntakeError(400, "missing event")
        event_name = event_name.strip().upper()
        if len(event_name) > EVENT_NAME_LENGTH:  # no Bitrix24 event is named so; cut, it would be another
            raise IntakeError(400, f"event name over {EVENT_NAME_LENGTH} characters")
        member_id, token = _credentials(form)
        entity_type, entity_id = entity_of(event_name, form)
        if entity_type in _ID_REQUIRED and entity_id is None:
            with self.engine.connect() as conn:  # a forged event is refused as forged (401) first
                self._verify(conn, form, member_id, token)
            raise IntakeError(400, "missing or bad data[FIELDS][ID]")
        return self._store(form, member_id, token, dict(
            event_name=event_name, entity_type=entity_type, entity_id=entity_id, payload=scrub(form),
            source=source, dedupe_key=dedupe_key_of(event_name, form, entity_id)))

    def store_robot_call(self, code: str, form: dict[str, Any]) -> Intake:
        """Verify and store a robot invocation as ROBOT:<code>; its event_token makes it unique."""
        if parse_robot_code(code or "") is None:
            # Only the codes we register (catalog.robot_definitions) have a handler here.
            raise IntakeError(404, "unknown robot")
        event_token = form.get("event_token")
        if not isinstance(event_token, str) or not event_token:
            raise IntakeError(400, "missing event_token")
        member_id, token = _credentials(form)
        entity_type, entity_id = None, None
        document = form.get("document_id")
        if isinstance(document, list) and len(document) >= 3:
            m = re.fullmatch(r"([A-Z_]+?)_(\d+)", str(document[2]))
            if m:
                entity_type, entity_id = m.group(1).lower(), parse_id(m.group(2))
                if entity_id is None:
                    with self.engine.connect() as conn:  # forged first (401), then malformed
                        self._verify(conn, form, member_id, token)
                    raise IntakeError(400, "bad document_id")
        digest = hashlib.sha256(event_token.encode()).hexdigest()[:48]
        return self._store(form, member_id, token, dict(
            event_name=f"ROBOT:{code}", entity_type=entity_type, entity_id=entity_id, payload=scrub(form),
            source="robot", dedupe_key=f"robot:{digest}"))

    def _store(self, form: dict[str, Any], member_id: str, token: str, values: dict[str, Any]) -> Intake:
        values.update(received_at=utcnow(), attempts=0)
        try:
            return self._store_once(form, member_id, token, values)
        except DBAPIError as exc:
            # The pool's connection was closed by the server (a restart, an idle timeout): the pool
            # is invalidated and the same statements run once more on a new connection. They are
            # idempotent: an insert that did land before the loss comes back as a duplicate.
            if not exc.connection_invalidated:
                raise
        return self._store_once(form, member_id, token, values)

    def _store_once(self, form: dict[str, Any], member_id: str, token: str, values: dict[str, Any]) -> Intake:
        with self.engine.connect() as conn:
            known = self._known.get(member_id)
            if known is not None and constant_time_equal(known.token, token):
                new_id = self._execute_insert(conn, self._guarded_insert, dict(
                    values, portal_id=known.portal_id, token_enc=known.token_enc, uninstalled=PORTAL_UNINSTALLED))
                if new_id is not None:
                    return Intake(new_id, False, values["event_name"], known.portal_id)
            values["portal_id"] = portal_id = self._verify(conn, form, member_id, token)
            new_id = self._execute_insert(conn, self._insert, values)
            if new_id is not None:
                return Intake(new_id, False, values["event_name"], portal_id)
            # The conflict clause fired: the same change is already stored.
            existing = conn.execute(_event_id_by_key, {"portal_id": portal_id,
                                                       "dedupe_key": values["dedupe_key"]}).scalar()
            return Intake(existing, True, values["event_name"], portal_id)

    def _execute_insert(self, conn, statement, params: dict[str, Any]) -> int | None:
        try:
            return conn.execute(statement, params).scalar()
        except IntegrityError:
            # Not a duplicate (the conflict clause covers that): the portal row went away between
            # verification and insert (an uninstall with CLEAN=1 purged it).
            if conn.execute(_portal_by_id, {"portal_id": params["portal_id"]}).first() is None:
                raise IntakeError(401, "unknown portal") from None
            raise

    def _verify(self, conn, form: dict[str, Any], member_id: str, token: str) -> int:
        """The id of the portal the form comes from, or IntakeError(401). A portal that has no
        application_token yet (a UI install: the token comes with the first event) adopts the first
        one whose access token the portal confirms."""
        portal = conn.execute(_portal_by_member, {"member_id": member_id}).first()
        if portal is None or portal.status == PORTAL_UNINSTALLED:
            self._known.pop(member_id, None)
            raise IntakeError(401, "unknown portal" if portal is None else "the app is not installed on this portal")
        token_enc = portal.application_token_enc
        if token_enc is None:
            token_enc = self._adopt_first_token(conn, portal, form["auth"], token)
        elif not constant_time_equal(self._decrypt(token_enc), token):
            raise IntakeError(401, "wrong application token")
        self._known[member_id] = _KnownPortal(portal.id, token_enc, token)
        return portal.id

    def _adopt_first_token(self, conn, portal, auth: dict[str, Any], token: str) -> str:
        domain = str(auth.get("domain") or "").lower()
        if not constant_time_equal(domain, (portal.domain or "").lower()):
            raise IntakeError(401, "unknown application token")
        # Knowing a portal's member_id and domain proves nothing. The first token is adopted only
        # when the event's access token works on that portal: one call, once per installation.
        # Events with no tokens (fired by automation) wait for reconcile to pick their change up.
        pace = self.pace_for(portal.id) if self.pace_for is not None else None
        if not _access_token_works(portal.client_endpoint, auth.get("access_token"), pace):
            raise IntakeError(401, "application token not confirmed yet")
        token_enc = self.cipher.encrypt(token)
        adopted = conn.execute(update(_portal).where(_portal.c.id == portal.id,
                                                     _portal.c.application_token_enc.is_(None))
                               .values(application_token_enc=token_enc))
        if adopted.rowcount == 1:
            return token_enc
        # Two first events raced and the other's token was adopted: this one must match it.
        now = conn.execute(_portal_by_id, {"portal_id": portal.id}).first()
        if now is None or now.application_token_enc is None or now.status == PORTAL_UNINSTALLED:
            raise IntakeError(401, "unknown portal")
        if not constant_time_equal(self._decrypt(now.application_token_enc), token):
            raise IntakeError(401, "wrong application token")
        return now.application_token_enc


def _credentials(form: dict[str, Any]) -> tuple[str, str]:
    """auth[member_id] (lower case, as stored) and auth[application_token], or IntakeError(400)."""
    auth = form.get("auth")
    if not isinstance(auth, dict):
        raise IntakeError(400, "missing auth[...]")
    member_id = auth.get("member_id")
    token = auth.get("application_token")
    if not isinstance(member_id, str) or not member_id or not isinstance(token, str) or not token:
        raise IntakeError(400, "missing auth[member_id] or auth[application_token]")
    return member_id.lower(), token


def _access_token_works(client_endpoint: str, access_token: Any, pace=None) -> bool:
    if not isinstance(access_token, str) or not access_token:
        return False
    from addon.bitrix.client import user_client
    from addon.bitrix.errors import PortalError, is_temporary

    try:
        user_client(client_endpoint, access_token, pace=pace).call("app.info")
    except PortalError as exc:
        if is_temporary(exc):  # busy, not a wrong token: the event is refused with "try again"
            raise IntakeError(503, f"the portal is busy ({exc.code}): not confirmed yet") from exc
        return False
    return True


# Both inserts are SQL text with the columns' own types rather than the dialects'
# insert().on_conflict_do_nothing(): SQLAlchemy 2.0 never caches the compiled form of those
# (sqlalchemy#10445: their ON CONFLICT clause has no cache key), and compiling one on every event
# cost about 0.4 ms of CPU, a third of the whole path. A text() statement is compiled once.
# PostgreSQL and SQLite (>= 3.35) share this syntax.

def _on_conflict_do_nothing() -> str:
    unique = next(c for c in _event.constraints if getattr(c, "name", None) == "uq_stored_event_dedupe")
    return f"ON CONFLICT ({', '.join(c.name for c in unique.columns)}) DO NOTHING RETURNING {_event.c.id.name}"


def _typed(sql: str, names: Iterable[str]):
    return text(sql).bindparams(*(bindparam(n, type_=_event.c[n].type) for n in names)).columns(_event.c.id)


def _insert_statement():
    """INSERT ... VALUES ... ON CONFLICT (portal_id, dedupe_key) DO NOTHING RETURNING id."""
    return _typed(f"INSERT INTO {_event.name} ({', '.join(_INSERT_COLUMNS)}) "
                  f"VALUES ({', '.join(':' + n for n in _INSERT_COLUMNS)}) {_on_conflict_do_nothing()}",
                  _INSERT_COLUMNS)


def _guarded_insert_statement(dialect):
    """The same insert, made only while the portal row still holds what was verified:
    INSERT ... SELECT ... FROM portal WHERE id, status and encrypted token match."""
    def value(name: str) -> str:
        if name == "portal_id":
            return f"{_portal.name}.{_portal.c.id.name}"
        # In a SELECT list PostgreSQL types a bare parameter as text; SQLite types nothing.
        if dialect.name == "postgresql":
            return f"CAST(:{name} AS {_event.c[name].type.compile(dialect=dialect)})"
        return f":{name}"

    names = [n for n in _INSERT_COLUMNS if n != "portal_id"]
    # SQLite needs the WHERE clause to tell the upsert's ON CONFLICT from a join (it has one).
    return _typed(f"INSERT INTO {_event.name} ({', '.join(_INSERT_COLUMNS)}) "
                  f"SELECT {', '.join(value(n) for n in _INSERT_COLUMNS)} FROM {_portal.name} "
                  f"WHERE {_portal.name}.{_portal.c.id.name} = :portal_id "
                  f"AND {_portal.name}.{_portal.c.status.name} <> :uninstalled "
                  f"AND {_portal.name}.{_portal.c.application_token_enc.name} = :token_enc "
                  f"{_on_conflict_do_nothing()}", names)
