"""Reading an uploaded bulk-load file: a CSV or XLSX as a header and its rows, within ImportLimits, and
which column holds what; BulkLoadError when the file as a whole cannot be read."""
from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from addon.config import Settings

# Header words we recognise, in the product's two languages (lower-cased, spaces collapsed).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "ид", "entity_id", "id клиента", "id контакта", "id компании", "идентификатор"),
    "phone": ("phone", "телефон", "тел", "тел.", "номер телефона", "phone number"),
    "email": ("email", "e-mail", "почта", "эл. почта", "электронная почта", "mail"),
    "status": ("status", "статус", "статус клиента"),
    "date": ("date", "дата", "дата статуса", "status date", "date set", "дата установки"),
    "entity_type": ("entity_type", "type", "entity", "тип", "сущность", "тип клиента"),
}


class BulkLoadError(ValueError):
    """The file as a whole cannot be read (not a single row is the problem)."""


@dataclass(frozen=True)
class ImportLimits:
    """What one file may hold (Settings' bulk-load group). Checked before the file is read whole:
    a 50 MB CSV once staged 1.34 M rows in 2.4 GB, a 419 KB .xlsx unpacked to 147 MB."""

    file_bytes: int = Settings.max_upload_bytes
    rows: int = Settings.max_import_rows
    unpacked_bytes: int = Settings.max_xlsx_unpacked_bytes

    @classmethod
    def of(cls, settings: Settings) -> "ImportLimits":
        return cls(settings.max_upload_bytes, settings.max_import_rows, settings.max_xlsx_unpacked_bytes)



@dataclass
class Table:
    """A file's header and, read as they are asked for, its data rows. `rows(width)` gives each row's
    first `width` cells (the columns past the last one we use are never converted)."""

    header: list[str]
    rows: Callable[[int], Iterator[Sequence[Any]]]


def read_table(filename: str, content: bytes, limits: ImportLimits = ImportLimits()) -> Table:
    """A CSV or XLSX file as a Table, every header cell as text."""
    if len(content) > limits.file_bytes:
        raise BulkLoadError(f"the file is {_mb(len(content))} MB, more than the {_mb(limits.file_bytes)} MB allowed: "
                            f"split it into smaller files")
    name = (filename or "").lower()
    if name.endswith((".xlsx", ".xlsm")) or content[:2] == b"PK":
        return _read_xlsx(content, limits)
    if name.endswith(".xls"):
        raise BulkLoadError("old .xls files are not supported: save the sheet as .xlsx or .csv")
    return _read_csv(content)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.3g}"


# Byte-order marks, longest first (UTF-32 LE begins with UTF-16 LE's). Excel's "Unicode text"
# and some CRMs' exports are UTF-16 with a BOM.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_CHUNK = 1 << 20


def csv_encoding(content: bytes) -> str:
    """The text encoding of a CSV: by its BOM, else UTF-8 when it decodes as UTF-8, else
    Windows-1251 (what Excel in Russia saves CSV in). Checked in chunks: never a decoded copy."""
    for bom, encoding in _BOMS:
        if content.startswith(bom):
            return encoding
    if b"\x00" in content[:4096]:  # UTF-16 without a BOM, or not text at all: cp1251 would "read" it
        raise BulkLoadError("the file is not plain text (UTF-16 without a byte-order mark?): "
                            "save it as CSV UTF-8 and load it again")
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for i in range(0, len(content), _CHUNK):
            decoder.decode(content[i:i + _CHUNK], final=i + _CHUNK >= len(content))
    except UnicodeDecodeError:
        return "cp1251"
    return "utf-8"


def _read_csv(content: bytes) -> Table:
    encoding = csv_encoding(content)
    try:
        sample = content[:32768].decode(encoding, "ignore")[:8192]
        dialect = csv.Sniffer().sniff(sample, delimiters=";,\t")
    except csv.Error:
        dialect = csv.excel
    text = io.TextIOWrapper(io.BytesIO(content), encoding=encoding, newline="")  # streamed, not decoded whole
    reader = csv.reader(text, dialect)
    try:
        header = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BulkLoadError(f"cannot read the file as {encoding} text: {exc}: save it as CSV UTF-8") from exc
    if not header:
        raise BulkLoadError("the file is empty")

    def rows(width: int) -> Iterator[list[str]]:
        try:
            for row in reader:
                yield [c.strip() for c in row[:width]]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise BulkLoadError(f"cannot read the file as {encoding} text at line {reader.line_num}: {exc}: "
                                f"save it as CSV UTF-8") from exc

    return Table([h.strip() for h in header], rows)


def check_xlsx_size(content: bytes, limits: ImportLimits = ImportLimits()) -> None:
    """Refuse a zip bomb before openpyxl opens it: the members' uncompressed sizes (from the zip's
    directory; zipfile never reads past a member's stated size) added up. openpyxl keeps the shared
    strings whole even in read-only mode, and a small file can unpack to millions of rows."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, ValueError) as exc:
        raise BulkLoadError(f"cannot read the spreadsheet: {exc}") from exc
    if unpacked > limits.unpacked_bytes:
        raise BulkLoadError(f"the spreadsheet unpacks to {_mb(unpacked)} MB, more than the "
                            f"{_mb(limits.unpacked_bytes)} MB allowed: split it into smaller files or save it as CSV")


def _read_xlsx(content: bytes, limits: ImportLimits) -> Table:
    from openpyxl import load_workbook  # 0.2 s to import: only for a spreadsheet

    check_xlsx_size(content, limits)
    try:
        book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)  # streams the rows
    except Exception as exc:  # openpyxl raises many kinds for a damaged file
        raise BulkLoadError(f"cannot read the spreadsheet: {exc}") from exc
    sheet = book.worksheets[0]
    header = next(sheet.iter_rows(max_row=1, values_only=True), None)
    if not header:
        book.close()
        raise BulkLoadError("the file is empty")

    def rows(width: int) -> Iterator[Sequence[Any]]:
        try:
            # Bounded to the columns we use: a sheet's stated width (up to 16,384) would otherwise
            # make every row, and every empty row openpyxl fills a gap with, that wide.
            yield from sheet.iter_rows(min_row=2, max_col=max(width, 1), values_only=True)
        finally:
            book.close()

    return Table([cell_text(h) for h in header], rows)


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%d.%m.%Y %H:%M:%S") if value.time() != dt.time() else value.strftime("%d.%m.%Y")
    if isinstance(value, dt.date):
        return value.strftime("%d.%m.%Y")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an ID or a phone typed as a number
    return str(value).strip()


def map_columns(header: list[str]) -> dict[str, int]:
    """Which column holds what (id, phone, email, status, date, entity_type)."""
    found: dict[str, int] = {}
    for index, title in enumerate(header):
        key = " ".join(str(title).lower().split())
        for column, aliases in COLUMN_ALIASES.items():
            if key in aliases and column not in found:
                found[column] = index
    if "status" not in found:
        raise BulkLoadError("the file needs a Status column (Статус)")
    if not {"id", "phone", "email"} & found.keys():
        raise BulkLoadError("the file needs an ID, Phone or Email column to find the client")
    return found

