"""The settings form: what it shows (from saved options or from a refused save), how its fields
become options, and how an error's key is named on the form. No request state."""
from __future__ import annotations

from typing import Any

from addon.ids import parse_id
from addon.options import DEFAULT_TEMPLATES, IN_WORK, LOST, SYSTEM_CODES, TEMPLATE_KINDS, Options, OptionsError
from settings_ui.i18n import option_error

BOOL_OPTIONS = ("reset_on_calls", "require_call", "merge_notifications", "new_for_new_entities",
                "timeline_comments", "feed_post", "open_to_all_on_loss", "notify_manager_on_loss",
                "notify_supervisor_on_loss")
INT_OPTIONS = ("call_lookback_days", "default_warn_days", "feed_post_days")
TEXT_OPTIONS = ("notify_time", "time_zone", "transfer_mode", "language")
STATUS_COLUMNS = {"name": "col_name", "days": "col_days", "warn_days": "col_warn", "code": "col_code",
                  "reasons": "col_reasons"}


def field_label(key: str, form, t) -> str:
    """The field an error key points at, as the admin sees it on the form: «Горячий — Дней до смены»,
    not `statuses.2.days`."""
    parts = key.split(".")
    if parts[0] == "statuses" and len(parts) == 3 and parts[1].isdigit():
        i = int(parts[1])
        names, codes = form.getlist("st_name"), form.getlist("st_code")
        name = (names[i].strip() if i < len(names) else "") or (codes[i] if i < len(codes) else "")
        row = f"«{name}»" if name else t("new_status_row", n=i + 1)
        return f"{row} — {t(STATUS_COLUMNS.get(parts[2], parts[2]))}"
    if parts[0] == "statuses":
        return t("sec_statuses")
    if parts[0] == "templates" and len(parts) == 2:
        return t("tpl_" + parts[1])
    if key == "transfer_pool":
        return t("transfer_pool_label")
    if key == "entity_types":
        return t("sec_entities")
    return t(key)


def settings_view(opts: Options) -> dict[str, Any]:
    """What the form shows, from saved options."""
    view = opts.to_dict()
    view["statuses"] = [dict(s.to_dict(), reasons_text="\n".join(s.reasons)) for s in opts.statuses]
    view["templates"] = {k: opts.templates.get(k, "") for k in TEMPLATE_KINDS}
    return view


def settings_view_from_form(form) -> dict[str, Any]:
    """What the form shows after a refused save: exactly what the admin typed."""
    view: dict[str, Any] = {k: form.get(k, "") for k in INT_OPTIONS + TEXT_OPTIONS}
    view.update({k: form.get(k) == "on" for k in BOOL_OPTIONS})
    view["entity_types"] = form.getlist("entity_types")
    view["transfer_user_id"] = form.get("transfer_user_id", "")
    view["transfer_pool"] = [i for i in map(parse_id, form.getlist("transfer_pool")) if i]
    view["statuses"] = [{"code": c, "name": n, "days": d, "warn_days": w, "reasons_text": r,
                         "system": c in SYSTEM_CODES}
                        for c, n, d, w, r in zip(form.getlist("st_code"), form.getlist("st_name"),
                                                 form.getlist("st_days"), form.getlist("st_warn_days"),
                                                 form.getlist("st_reasons"))]
    view["templates"] = {k: form.get(f"tpl_{k}", "") for k in TEMPLATE_KINDS}
    return view


def parse_settings_form(form, lang: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The options as `Options.to_dict()` writes them, or the errors keyed by field path."""
    errors: dict[str, str] = {}

    def whole(key: str, text: str, allow_empty: bool = False) -> int | None:
        text = (text or "").strip()
        if not text and allow_empty:
            return None
        try:
            return int(text)
        except ValueError:
            errors[key] = option_error(lang, "a whole number")
            return None

    data: dict[str, Any] = {"entity_types": form.getlist("entity_types")}
    for key in BOOL_OPTIONS:
        data[key] = form.get(key) == "on"
    for key in INT_OPTIONS:
        value = whole(key, form.get(key, ""))
        data[key] = value if value is not None else 0
    for key in TEXT_OPTIONS:
        data[key] = (form.get(key) or "").strip()
    data["transfer_user_id"] = whole("transfer_user_id", form.get("transfer_user_id", ""), allow_empty=True)
    if data["transfer_user_id"] is not None and parse_id(data["transfer_user_id"]) is None:
        errors["transfer_user_id"] = option_error(lang, "a whole number")  # a user ID, stored as one
    data["transfer_pool"] = [i for i in map(parse_id, form.getlist("transfer_pool")) if i]

    statuses = []
    used = set(form.getlist("st_code"))
    for i, (code, name, days, warn, reasons) in enumerate(zip(
            form.getlist("st_code"), form.getlist("st_name"), form.getlist("st_days"),
            form.getlist("st_warn_days"), form.getlist("st_reasons"))):
        code = code.strip().upper()
        if not code:  # a status the admin just added: a fresh code, kept forever after
            n = 1
            while f"CUSTOM_{n}" in used:
                n += 1
            code = f"CUSTOM_{n}"
            used.add(code)
        system = code in SYSTEM_CODES
        statuses.append({
            "code": code, "name": name.strip(), "system": system,
            "days": None if code in (IN_WORK, LOST) else whole(f"statuses.{i}.days", days),
            "warn_days": None if code in (IN_WORK, LOST) else whole(f"statuses.{i}.warn_days", warn, allow_empty=True),
            "reasons": [r.strip() for r in reasons.replace(",", "\n").splitlines() if r.strip()],
        })
    data["statuses"] = statuses
    templates = {}
    language = data["language"] if data["language"] in DEFAULT_TEMPLATES else "ru"
    for kind in TEMPLATE_KINDS:
        text = (form.get(f"tpl_{kind}") or "").strip()
        if text and text != DEFAULT_TEMPLATES[language][kind]:
            templates[kind] = text  # only real edits are stored, so defaults follow the language
    data["templates"] = templates
    if errors:
        return data, errors
    try:
        options = Options.from_dict(data)
    except OptionsError as exc:
        return data, {k: option_error(lang, v) for k, v in exc.errors.items()}
    except (TypeError, ValueError) as exc:
        return data, {"form": str(exc)}
    return options.to_dict(), {}
