"""What a bulk load gives back as files: the result report of a load and the template to fill in (CSV
or XLSX), their cells made inert for spreadsheets."""
from __future__ import annotations

import csv
import io
import re
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from addon.models import ImportRow
from addon.options import IN_WORK, Options

# The template and the report speak Russian, the admin's language; the upload reads both languages.
TEMPLATE_HEADER = ("ID", "Телефон", "E-mail", "Статус", "Дата", "Тип")
REPORT_HEADER = ("Строка", "Тип", "Найден по", "Значение", "ID клиента", "Статус", "Дата", "Результат", "Ошибка")
REPORT_STATES = {"pending": "ожидает загрузки", "invalid": "ошибка в строке", "applied": "загружено",
                 "failed": "не удалось", "skipped": "пропущено"}
REPORT_WORDS = {"contact": "контакт", "company": "компания", "id": "ID", "phone": "телефон", "email": "e-mail"}


# A cell a spreadsheet would take for a formula (OWASP "CSV injection"): = + - @, tab, CR.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+")


def csv_safe(value: Any) -> Any:
    """A cell of a CSV we produce, made inert: text starting like a formula gets a leading `'`
    (`=1+2@evil.com` -> `'=1+2@evil.com`), so Excel or LibreOffice shows it instead of running
    it. A plain signed number (an E.164 phone such as +79991259999) is no formula and is kept."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_rows(rows: Iterable[Iterable[Any]]) -> Iterator[list[Any]]:
    for row in rows:
        yield [csv_safe(v) for v in row]


def report_csv(session: Session, job_id: int, error_text: Callable[[str], str] | None = None,
               status_name: Callable[[str], str] | None = None) -> Iterator[str]:
    """The result report, row by row (streamed: a load may hold 100,000 rows); `error_text` and
    `status_name` put a row's error and status in the reader's words."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(REPORT_HEADER)
    yield _drain(out)
    last = 0
    while True:
        rows = list(session.scalars(select(ImportRow).where(ImportRow.job_id == job_id, ImportRow.row_no > last)
                                    .order_by(ImportRow.row_no).limit(2000)))
        if not rows:
            break
        for r in rows:
            data = r.data or {}
            error = (error_text(r.error) if error_text else r.error) if r.error else ""
            status = (status_name(r.status) if status_name else r.status) if r.status else ""
            writer.writerow([csv_safe(v) for v in (r.row_no, REPORT_WORDS.get(r.entity_type or "", r.entity_type or ""),
                             REPORT_WORDS.get(data.get("match_by", ""), data.get("match_by", "")),
                             data.get("match_value", ""), r.entity_id or "", status, data.get("status_on", ""),
                             REPORT_STATES.get(r.state, r.state), error)])
        last = rows[-1].row_no
        yield _drain(out)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def template_rows(options: Options) -> list[list[str]]:
    """Example rows of the downloadable template: one per way of finding a client."""
    names = [s.name for s in options.statuses if s.code != IN_WORK]
    first = names[0] if names else "NEW"
    second = names[2] if len(names) > 2 else first
    return [["123", "", "", first, "01.01.2000", "контакт"],
            ["", "+7 (999) 125-99-99", "", second, "01.01.2000 12:34:00", "контакт"],
            ["", "", "client@example.com", first, "", "компания"]]


def template_csv(options: Options) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(TEMPLATE_HEADER)
    writer.writerows(safe_rows(template_rows(options)))  # status names are the admin's free text
    return out.getvalue().encode("utf-8-sig")  # with a BOM so Excel opens Cyrillic right


def template_xlsx(options: Options) -> bytes:
    from openpyxl import Workbook  # 0.2 s to import: only for a spreadsheet

    book = Workbook()
    sheet = book.active
    sheet.title = "Статусы"
    sheet.append(list(TEMPLATE_HEADER))
    for row in template_rows(options):
        sheet.append(row)
    sheet.append([])
    sheet.append(["# Статусы:"] + [f"{s.code} = {s.name}" for s in options.statuses if s.code != IN_WORK])
    for cells in sheet.iter_rows():
        for cell in cells:
            if cell.data_type == "f":  # openpyxl takes any text starting with "=" for a formula
                cell.data_type = "s"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
