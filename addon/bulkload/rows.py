"""Validating a bulk-load file's rows: each becomes a RowDraft with its status, its date and the ID,
phone or e-mail that names its client, or the errors that keep it from loading."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Iterator

import phonenumbers

from addon.bulkload.files import BulkLoadError, ImportLimits, cell_text, map_columns, read_table
from addon.ids import parse_id
from addon.options import IN_WORK, Options
from addon.phones import normalize_phone

ENTITY_WORDS = {"contact": "contact", "контакт": "contact", "contacts": "contact", "контакты": "contact",
                "company": "company", "компания": "company", "companies": "company", "компании": "company"}
DATE_FORMATS = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(slots=True)  # a file may hold ImportLimits.rows of them
class RowDraft:
    """One row of the file, validated, before it is stored as an ImportRow."""

    row_no: int
    data: dict[str, str]
    entity_type: str | None = None
    match_by: str | None = None  # id | phone | email
    match_value: str | None = None
    entity_id: int | None = None
    status: str | None = None
    status_on: dt.date | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors



def status_lookup(options: Options) -> dict[str, str]:
    """Status code or name (any case, ё = е) → code; IN_WORK is held by deals and never loaded."""
    table: dict[str, str] = {}
    for s in options.statuses:
        if s.code == IN_WORK:
            continue
        table[_fold(s.code)] = s.code
        table[_fold(s.name)] = s.code
    return table


def _fold(text: str) -> str:
    return " ".join(text.lower().replace("ё", "е").split())


def parse_date(text: str) -> dt.date:
    """`01.01.2000 12:34:00` or `01.01.2000` (also ISO); the day is what counts."""
    for fmt in DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(text)


def normalize_import_phone(raw: str, region: str) -> str | None:
    """E.164 for any common way of writing a number; also numbers that are possible but not
    (yet) allocated, e.g. `81234657885`, because the CRM holds whatever managers typed."""
    number = normalize_phone(raw, region)
    if number:
        return number
    text = str(raw).strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def validate_row(row_no: int, data: dict[str, str], options: Options, statuses: dict[str, str],
                 default_entity_type: str, region: str, today: dt.date) -> RowDraft:
    draft = RowDraft(row_no=row_no, data=data)
    raw_type = data.get("entity_type", "").strip()
    entity_type = ENTITY_WORDS.get(_fold(raw_type)) if raw_type else default_entity_type
    if entity_type is None:
        draft.errors.append(f"unknown type «{raw_type}» (contact or company)")
    elif entity_type not in options.entity_types:
        draft.errors.append(f"{entity_type} is not tracked in the settings")
    draft.entity_type = entity_type

    raw_status = data.get("status", "").strip()
    if not raw_status:
        draft.errors.append("status is empty")
    else:
        draft.status = statuses.get(_fold(raw_status))
        if draft.status is None:
            draft.errors.append(f"unknown status «{raw_status}»")

    raw_date = data.get("date", "").strip()
    if raw_date:
        try:
            draft.status_on = parse_date(raw_date)
        except ValueError:
            draft.errors.append(f"date «{raw_date}» is not like 01.01.2000 or 01.01.2000 12:34:00")
        else:
            if draft.status_on > today:
                draft.errors.append(f"date {raw_date} is in the future")

    raw_id, raw_phone, raw_email = (data.get(k, "").strip() for k in ("id", "phone", "email"))
    if raw_id:
        if parse_id(raw_id) is not None:  # a 40-digit "ID" is no client's, and no Integer column's
            draft.match_by, draft.match_value, draft.entity_id = "id", raw_id, parse_id(raw_id)
        else:
            draft.errors.append(f"ID «{raw_id}» is not a number")
    elif raw_phone:
        phone = normalize_import_phone(raw_phone, region)
        if phone:
            draft.match_by, draft.match_value = "phone", phone
        else:
            draft.errors.append(f"phone «{raw_phone}» is not a phone number")
    elif raw_email:
        if EMAIL_RE.match(raw_email):
            draft.match_by, draft.match_value = "email", raw_email.lower()
        else:
            draft.errors.append(f"e-mail «{raw_email}» is not an address")
    else:
        draft.errors.append("no ID, phone or e-mail to find the client")
    return draft


def parse_rows(filename: str, content: bytes, options: Options, default_entity_type: str = "contact",
               region: str = "RU", today: dt.date | None = None,
               limits: ImportLimits = ImportLimits()) -> Iterator[RowDraft]:
    """Every data row of the file, validated (row_no counts from 2: row 1 is the header). A file
    with more than `limits.rows` rows is refused (BulkLoadError) as soon as the next one is read."""
    today = today or dt.date.today()
    table = read_table(filename, content, limits)
    columns = map_columns(table.header)
    statuses = status_lookup(options)
    count = 0
    for offset, cells in enumerate(table.rows(max(max(columns.values()), 0) + 1)):
        if not any(cells) or cell_text(cells[0]).startswith("#"):
            continue  # blank lines and the template's notes are not rows
        count += 1
        if count > limits.rows:
            raise BulkLoadError(f"the file has more than {limits.rows:,} rows, the most one load takes: "
                                f"split it into files of at most {limits.rows:,} rows")
        data = {name: (cell_text(cells[i]) if i < len(cells) else "") for name, i in columns.items()}
        yield validate_row(offset + 2, data, options, statuses, default_entity_type, region, today)
