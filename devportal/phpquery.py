"""PHP-style query strings: `parse_str` (brackets to nested dicts/lists) and `http_build_query`."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote

_KEY = re.compile(r"\[([^\]]*)\]")


def _split_key(key: str) -> list[str] | None:
    """`a[b][]` -> ["a", "b", ""]; PHP ignores a key with an empty base name."""
    base_end = key.find("[")
    if base_end == -1:
        return [key] if key else None
    base = key[:base_end]
    if not base:
        return None
    parts = [base]
    rest = key[base_end:]
    pos = 0
    for m in _KEY.finditer(rest):
        if m.start() != pos:  # PHP stops at the first malformed segment and keeps what it had
            break
        parts.append(m.group(1))
        pos = m.end()
    return parts


def parse_php_query(query: str | bytes) -> dict:
    """Parse like PHP `parse_str`: `a[]=1&a[]=2`, `a[b][c]=x`; `+` is a space; later keys win.

    Containers are dicts keyed by string; `[]` appends the next integer key. Callers that want
    lists use `as_list()` (PHP has only ordered maps, so does this).
    """
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    out: dict = {}
    for raw_key, value in parse_qsl(query, keep_blank_values=True):
        parts = _split_key(raw_key)
        if parts is None:
            continue
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":
                part = str(_next_index(node))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return out


def _next_index(node: dict) -> int:
    ints = [int(k) for k in node if k.lstrip("-").isdigit()]
    return max(ints) + 1 if ints else 0


def as_list(value) -> list:
    """A PHP array as a Python list: dict values in order, a scalar as a one-item list."""
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def flatten(data, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts/lists to PHP bracket pairs, as a portal form-encodes event and page POSTs."""
    pairs: list[tuple[str, str]] = []
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return [(prefix, _scalar(data))]
    for key, value in items:
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, (dict, list, tuple)):
            if not value:
                continue
            pairs.extend(flatten(value, name))
        else:
            pairs.append((name, _scalar(value)))
    return pairs


def _scalar(value) -> str:
    if value is None:
        return ""
    if value is True:
        return "1"
    if value is False:
        return ""
    return str(value)


def http_build_query(data: dict) -> str:
    """PHP `http_build_query`: bracketed keys, values percent-encoded (spaces as `+`)."""
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in flatten(data))
