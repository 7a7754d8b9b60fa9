"""REST methods of the portal's people: user options, profile, user.* and department.get."""
from __future__ import annotations

from devportal import crm
from devportal.answers import Listing
from devportal.methods.common import arg, as_dict, registrar
from devportal.phpquery import as_list

METHODS: dict = {}
method = registrar(METHODS)


@method("user.option.set")
def user_option_set(portal, ctx, params):
    options = as_dict(arg(params, "options"))
    portal.user_options.setdefault(ctx.user_id, {}).update(options)
    return True


@method("user.option.get")
def user_option_get(portal, ctx, params):
    mine = portal.user_options.get(ctx.user_id, {})
    option = arg(params, "option")
    if option is not None:
        return mine.get(option)
    return mine if mine else []


def _public_user(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


@method("profile")
def profile(portal, ctx, params):
    user = portal.users[ctx.user_id]
    return {"ID": user["ID"], "ADMIN": user["_ADMIN"], "NAME": user["NAME"], "LAST_NAME": user["LAST_NAME"],
            "PERSONAL_GENDER": "", "PERSONAL_PHOTO": "", "TIME_ZONE": user.get("TIME_ZONE") or "",
            "TIME_ZONE_OFFSET": 0}


@method("user.current")
def user_current(portal, ctx, params):
    return _public_user(portal.users[ctx.user_id])


@method("user.admin")
def user_admin(portal, ctx, params):
    return portal.is_admin(ctx.user_id)


@method("user.get", "user.search")
def user_get(portal, ctx, params):
    flt = dict(as_dict(arg(params, "filter")) or as_dict(arg(params, "FILTER")))
    for key, value in params.items():  # top-level filter keys are allowed too
        if key.upper() not in ("FILTER", "SORT", "ORDER", "START", "ADMIN_MODE", "AUTH") and \
                not isinstance(value, dict):
            flt[key] = value
    rows = []
    for user in portal.users.values():
        if _user_matches(user, flt):
            rows.append(_public_user(user))
    sort = str(arg(params, "sort") or "ID").upper()
    desc = str(arg(params, "order") or "ASC").upper() == "DESC"
    rows.sort(key=lambda r: (int(r["ID"]) if sort == "ID" else str(r.get(sort) or "")), reverse=desc)
    page, total, nxt = crm.page_of(rows, arg(params, "start", 0))
    return Listing(page, total, nxt)


def _user_matches(user: dict, flt: dict) -> bool:
    for raw_key, value in flt.items():
        op, key = crm.split_filter_key(str(raw_key))
        key = key.upper()
        if key == "ACTIVE":
            wanted = str(value).lower() in ("true", "1", "y")
            if user["ACTIVE"] != wanted:
                return False
        elif key == "UF_DEPARTMENT":
            wanted = {int(v) for v in as_list(value)}
            if not wanted & set(user["UF_DEPARTMENT"]):
                return False
        elif key == "USER_TYPE":
            if value != user["USER_TYPE"]:
                return False
        elif key in ("NAME_SEARCH", "FIND"):
            hay = f"{user['NAME']} {user['LAST_NAME']} {user['EMAIL']}".lower()
            if str(value).lower() not in hay:
                return False
        elif key == "ID":
            ids = {str(v) for v in as_list(value)}
            if user["ID"] not in ids:
                return False
        elif key in user:
            actual = str(user[key] or "").lower()
            if op == "%" and str(value).lower() not in actual:
                return False
            if op != "%" and actual != str(value).lower():
                return False
    return True


@method("department.get")
def department_get(portal, ctx, params):
    rows = []
    for dep in portal.departments.values():
        ok = True
        for key in ("ID", "NAME", "PARENT", "UF_HEAD"):
            value = arg(params, key)
            if value is not None and str(dep.get(key) or "") != str(value):
                ok = False
        if ok:
            rows.append({k: v for k, v in dep.items() if v is not None})
    sort = str(arg(params, "sort") or "ID").upper()
    rows.sort(key=lambda r: int(r["ID"]) if sort == "ID" else str(r.get(sort) or ""),
              reverse=str(arg(params, "order") or "ASC").upper() == "DESC")
    page, total, nxt = crm.page_of(rows, arg(params, "start", 0))
    return Listing(page, total, nxt)
