"""Per-portal options of the status ladder (seed 003, DESIGN §1): typed, with defaults, validated.

Stored as JSON in `portal_settings.data`; `Options.from_dict` accepts what `to_dict` wrote and
fills defaults for anything missing, so adding an option never needs a data migration.
"""
from __future__ import annotations

import datetime as dt
import functools
import re
import string
from dataclasses import asdict, dataclass, field, replace
from typing import Any

EMPTY = "EMPTY"
NEW = "NEW"
IN_WORK = "IN_WORK"
LOST = "LOST"
SYSTEM_CODES = (NEW, IN_WORK, LOST)
ENTITY_TYPES = ("contact", "company")
TRANSFER_MODES = ("none", "user", "pool", "supervisor")
CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")


class OptionsError(ValueError):
    """Invalid options; `errors` maps a field path to a message in the product's words."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class StatusDef:
    code: str
    name: str
    system: bool = False
    days: int | None = None  # None: the status does not decay (IN_WORK, LOST)
    warn_days: int | None = None  # None: the default warning days
    reasons: tuple[str, ...] = ()  # a change into this status needs one of these reasons

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StatusDef":
        # No name stays no name: the code in its place would let an unnamed status join the chain
        # unseen, where validate() asks the admin for one.
        return cls(code=str(d["code"]), name=str(d.get("name") or ""), system=bool(d.get("system")),
                   days=_opt_int(d.get("days")), warn_days=_opt_int(d.get("warn_days")),
                   reasons=tuple(str(r) for r in d.get("reasons") or ()))


def default_statuses() -> tuple[StatusDef, ...]:
    return (
        StatusDef(NEW, "Новый", system=True, days=10),
        StatusDef(IN_WORK, "В работе", system=True),
        StatusDef("HOT", "Горячий", days=30),
        StatusDef("WARM", "Тёплый", days=60),
        StatusDef("COLD", "Холодный", days=90),
        StatusDef(LOST, "Пропал", system=True),
    )


DEFAULT_TEMPLATES = {
    "ru": {
        "warning": "Клиент {entity} ({status}) сменит статус на «{next_status}» {due_date}, если с ним не связаться.",
        "decay": "Клиент {entity}: статус сменился с «{from_status}» на «{to_status}».",
        "loss_manager": "Клиент {entity} потерян: статус «{to_status}». Позвоните ему!",
        "loss_supervisor": "Менеджер {manager} потерял клиента {entity}.",
        "transfer": "Клиент {entity} передан вам (прежний менеджер: {manager}).",
        "revert": "Статус клиента {entity} возвращён на «{to_status}»: {reason}.",
        "digest_header": "Не забыт: сводка за {date}",
        "feed_title": "Скоро сменят статус",
    },
    "en": {
        "warning": "Client {entity} ({status}) will become “{next_status}” on {due_date} unless someone calls.",
        "decay": "Client {entity}: status changed from “{from_status}” to “{to_status}”.",
        "loss_manager": "Client {entity} is lost: status “{to_status}”. Call them!",
        "loss_supervisor": "Manager {manager} lost client {entity}.",
        "transfer": "Client {entity} was handed to you (previous manager: {manager}).",
        "revert": "Status of client {entity} was reverted to “{to_status}”: {reason}.",
        "digest_header": "Nezabyt: digest for {date}",
        "feed_title": "Clients changing status soon",
    },
}
TEMPLATE_KINDS = tuple(DEFAULT_TEMPLATES["ru"])
TEMPLATE_PLACEHOLDERS = ("entity", "status", "next_status", "due_date", "from_status", "to_status",
                         "manager", "reason", "date", "link")


def template_problem(text: str) -> str | None:
    """What is wrong with a message template, or None. Only plain `{name}` placeholders of
    TEMPLATE_PLACEHOLDERS: str.format would also follow `{entity.__class__}` or `{link[0]}` into
    the values' attributes, and pad `{entity:>99999999}` to any size."""
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:  # a stray { or }
        return f"unknown placeholder or stray brace: {exc}"
    for _literal, name, spec, conversion in pieces:
        if name is None:
            continue
        if name not in TEMPLATE_PLACEHOLDERS or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            return f"unknown placeholder or stray brace: {{{shown}}}"
    return None


@functools.lru_cache(maxsize=512)
def _parsed(text: str) -> tuple[tuple[str, str | None, str | None, str | None], ...]:
    """A template's pieces, parsed once (a digest fills the same few templates for every line).
    A template that cannot be parsed raises ValueError each time, as the parser does."""
    return tuple(string.Formatter().parse(text))


def fill_template(text: str, values: dict[str, str]) -> str:
    """`text` with each plain `{name}` replaced by values[name] (`{{` and `}}` are braces), by
    substitution: never an attribute, index, format spec or conversion. ValueError for anything
    template_problem refuses, or a name missing from `values`."""
    out = []
    for literal, name, spec, conversion in _parsed(text):
        out.append(literal)
        if name is None:
            continue
        if spec or conversion or name not in values:
            raise ValueError(f"placeholder {{{name}}} cannot be filled")
        out.append(values[name])
    return "".join(out)


@dataclass(frozen=True)
class Options:
    entity_types: tuple[str, ...] = ENTITY_TYPES
    statuses: tuple[StatusDef, ...] = field(default_factory=default_statuses)
    reset_on_calls: bool = True
    require_call: bool = False  # "no change without a call"
    call_lookback_days: int = 3
    default_warn_days: int = 3
    notify_time: str = "09:00"
    time_zone: str = "UTC"  # IANA name or a fixed offset like "+03:00"
    merge_notifications: bool = True
    new_for_new_entities: bool = True
    timeline_comments: bool = False
    feed_post: bool = False
    feed_post_days: int = 3  # entities changing within this many days are listed in the feed post
    open_to_all_on_loss: bool = False
    transfer_mode: str = "none"
    transfer_user_id: int | None = None
    transfer_pool: tuple[int, ...] = ()
    notify_manager_on_loss: bool = True
    notify_supervisor_on_loss: bool = True
    language: str = "ru"
    templates: dict[str, str] = field(default_factory=dict)  # overrides of DEFAULT_TEMPLATES[language]

    # --- the ladder -------------------------------------------------------------------------
    def status(self, code: str) -> StatusDef | None:
        return self._by_code.get(code)

    @functools.cached_property
    def _by_code(self) -> dict[str, StatusDef]:
        """The statuses by code (the first of a code, as a scan would find it); kept on the
        instance, which is frozen, so it cannot go stale."""
        by_code: dict[str, StatusDef] = {}
        for s in self.statuses:
            by_code.setdefault(s.code, s)
        return by_code

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(s.code for s in self.statuses)

    @property
    def custom_chain(self) -> tuple[str, ...]:
        """Custom statuses top to bottom: the order they decay in."""
        return tuple(s.code for s in self.statuses if not s.system)

    def next_status(self, code: str) -> str | None:
        """The status `code` decays to, or None if it does not decay."""
        s = self.status(code)
        if s is None or s.days is None or code in (IN_WORK, LOST):
            return None
        if code == NEW:
            return LOST
        chain = self.custom_chain
        i = chain.index(code)
        return chain[i + 1] if i + 1 < len(chain) else LOST

    @property
    def won_status(self) -> str:
        """What an entity becomes when its last open deal is won: the top of the custom chain."""
        chain = self.custom_chain
        return chain[0] if chain else NEW

    def warn_days_for(self, code: str) -> int:
        s = self.status(code)
        return s.warn_days if s is not None and s.warn_days is not None else self.default_warn_days

    def name_of(self, code: str | None) -> str:
        if code is None or code == EMPTY:
            return "—"
        s = self.status(code)
        return s.name if s else code

    def template(self, kind: str) -> str:
        lang = self.language if self.language in DEFAULT_TEMPLATES else "en"
        return self.templates.get(kind) or DEFAULT_TEMPLATES[lang][kind]

    def notify_clock(self) -> dt.time:
        h, m = self.notify_time.split(":")
        return dt.time(int(h), int(m))

    # --- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["entity_types"] = list(self.entity_types)
        d["statuses"] = [s.to_dict() for s in self.statuses]
        d["transfer_pool"] = list(self.transfer_pool)
        d["templates"] = dict(self.templates)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Options":
        data = dict(data or {})
        base = cls()
        kwargs: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name not in data:
                continue
            value = data[name]
            if name == "statuses":
                value = tuple(StatusDef.from_dict(s) for s in value)
            elif name in ("entity_types",):
                value = tuple(str(v) for v in value)
            elif name == "transfer_pool":
                value = tuple(int(v) for v in value)
            elif name == "templates":
                value = {str(k): str(v) for k, v in (value or {}).items() if v}
            elif name == "transfer_user_id":
                value = _opt_int(value)
            kwargs[name] = value
        options = replace(base, **kwargs)
        validate(options)
        return options


def validate(o: Options) -> None:
    """Raise OptionsError listing every problem, in the admin's words."""
    errors: dict[str, str] = {}
    if not o.entity_types or any(t not in ENTITY_TYPES for t in o.entity_types):
        errors["entity_types"] = "choose contacts, companies or both"
    codes = [s.code for s in o.statuses]
    if len(set(codes)) != len(codes):
        errors["statuses"] = "status codes must be unique"
    for code in SYSTEM_CODES:
        if code not in codes:
            errors["statuses"] = f"the system status {code} cannot be deleted"
    # System statuses keep their places: NEW, IN_WORK first, custom in the middle, LOST last.
    if codes[:2] != [NEW, IN_WORK] or (codes and codes[-1] != LOST):
        errors.setdefault("statuses", "system statuses cannot be moved")
    for i, s in enumerate(o.statuses):
        if not s.name.strip():
            errors[f"statuses.{i}.name"] = "a status needs a name"
        if not s.system and not CODE_RE.match(s.code):
            errors[f"statuses.{i}.code"] = "a code is upper-case Latin letters, digits and _"
        if not s.system and s.code in (EMPTY,):
            errors[f"statuses.{i}.code"] = "this code is reserved"
        if s.code in (NEW,) or not s.system:
            if s.days is None or s.days < 1 or s.days > 3650:
                errors[f"statuses.{i}.days"] = "days must be a whole number from 1 to 3650"
        if s.warn_days is not None and (s.warn_days < 0 or (s.days is not None and s.warn_days >= s.days)):
            errors[f"statuses.{i}.warn_days"] = "warning days must be at least 0 and fewer than the days"
        if s.code in (IN_WORK, LOST) and s.days is not None:
            errors[f"statuses.{i}.days"] = f"{s.code} does not decay"
        if s.system != (s.code in SYSTEM_CODES):
            errors[f"statuses.{i}.code"] = "only NEW, IN_WORK and LOST are system statuses"
    if not 0 <= o.call_lookback_days <= 60:
        errors["call_lookback_days"] = "look-back days must be from 0 to 60"
    if not 0 <= o.default_warn_days <= 365:
        errors["default_warn_days"] = "warning days must be from 0 to 365"
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", o.notify_time or ""):
        errors["notify_time"] = "time is HH:MM, e.g. 09:00"
    if parse_time_zone(o.time_zone) is None:
        errors["time_zone"] = "unknown time zone (use a name like Europe/Moscow or an offset like +03:00)"
    if o.transfer_mode not in TRANSFER_MODES:
        errors["transfer_mode"] = "choose none, a user, a pool or the supervisor"
    if o.transfer_mode == "user" and not o.transfer_user_id:
        errors["transfer_user_id"] = "choose the user who receives lost clients"
    if o.transfer_mode == "pool" and not o.transfer_pool:
        errors["transfer_pool"] = "the pool needs at least one user"
    if not 1 <= o.feed_post_days <= 30:
        errors["feed_post_days"] = "days must be from 1 to 30"
    if o.language not in ("ru", "en"):
        errors["language"] = "language is ru or en"
    for kind, text in o.templates.items():
        if kind not in TEMPLATE_KINDS:
            errors[f"templates.{kind}"] = "unknown message"
            continue
        problem = template_problem(text)
        if problem:
            errors[f"templates.{kind}"] = problem
    if errors:
        raise OptionsError(errors)


def parse_time_zone(name: str) -> dt.tzinfo | None:
    """An IANA zone or a fixed offset (+03:00, UTC+3)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not name:
        return None
    m = re.fullmatch(r"(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?", name.strip())
    if m:
        sign = 1 if m.group(1) == "+" else -1
        delta = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
        if delta > dt.timedelta(hours=14):
            return None
        return dt.timezone(sign * delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _opt_int(v: Any) -> int | None:
    if v is None or v == "":
        return None
    return int(v)
