"""Phone numbers in one shape (E.164) so that one client has one phone: robots, bulk load, matching."""
from __future__ import annotations

from typing import Iterable

import phonenumbers

# Bitrix24 portal languages that name a country; other languages (en, es, ...) say nothing about
# where the clients' phones are, so the caller's default region applies.
_LANGUAGE_REGIONS = {
    "ru": "RU", "ua": "UA", "by": "BY", "kz": "KZ", "de": "DE", "pl": "PL", "br": "BR", "fr": "FR",
    "it": "IT", "tr": "TR", "vn": "VN", "id": "ID", "ms": "MY", "th": "TH", "ja": "JP", "tc": "TW",
    "sc": "CN", "la": "MX",
}
DEFAULT_REGION = "RU"


def normalize_phone(raw: object, default_region: str = DEFAULT_REGION) -> str | None:
    """The number in E.164 (`+79171234578`), or None when `raw` is not a valid phone number.

    A national number without a country code (`89171234578`, `9171234578`) is read in
    `default_region`; a leading `+` or `00` wins over the region.
    """
    if raw is None:
        return None
    text = str(raw).strip()
    if not text or not any(ch.isdigit() for ch in text):
        return None
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, (default_region or DEFAULT_REGION).upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_phones(values: Iterable[object], default_region: str = DEFAULT_REGION) -> list[str]:
    """The distinct valid numbers among `values`, in first-seen order."""
    seen: dict[str, None] = {}
    for value in values:
        number = normalize_phone(value, default_region)
        if number:
            seen.setdefault(number, None)
    return list(seen)


def phone_region_for(language: str | None = None, country: str | None = None,
                     default: str = DEFAULT_REGION) -> str:
    """The region national numbers are read in: the portal's country if known, else its language's."""
    if country:
        code = country.strip().upper()
        if code in phonenumbers.SUPPORTED_REGIONS:
            return code
    if language:
        region = _LANGUAGE_REGIONS.get(language.strip().lower()[:2])
        if region:
            return region
    return default


def multifield_phones(item: dict) -> list[str]:
    """The raw values of a CRM item's PHONE multi-field (`[{"VALUE": ...}, ...]`), empty if none."""
    values = item.get("PHONE") or item.get("phone") or []
    if isinstance(values, dict):  # some paths return the multi-field keyed by entry ID
        values = list(values.values())
    result = []
    for entry in values:
        if isinstance(entry, dict):
            value = entry.get("VALUE") or entry.get("value")
            if value:
                result.append(str(value))
        elif entry:
            result.append(str(entry))
    return result
