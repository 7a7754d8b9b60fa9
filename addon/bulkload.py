"""Bulk load of statuses: read a CSV/XLSX file, validate each row, match it to a CRM client, store
the rows of an ImportJob for preview; the worker applies them later (worker.imports)."""
from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from addon.config import Settings
from addon.ids import parse_id
from addon.models import ImportJob, ImportRow
from addon.options import IN_WORK, Options

# Header words we recognise, in the product's two languages (lower-cased, spaces collapsed).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "ид", "entity_id", "id клиента", "id контакта", "id компании", "идентификатор"),
    "phone": ("phone", "телефон", "тел", "тел.", "номер телефона", "phone number"),
    "email": ("email", "e-mail", "почта", "эл. почта", "электронная почта", "mail"),
    "status": ("status", "статус", "статус клиента"),
    "date": ("date", "дата", "дата статуса", "status date", "date set", "дата установки"),
    "entity_type": ("entity_type", "type", "entity", "тип", "сущность", "тип клиента"),
}
ENTITY_WORDS = {"contact": "contact", "контакт": "contact", "contacts": "contact", "контакты": "contact",
                "company": "company", "компания": "company", "companies": "company", "компании": "company"}
DATE_FORMATS = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# The template and the report speak Russian, the admin's language; the upload reads both languages.
TEMPLATE_HEADER = ("ID", "Телефон", "E-mail", "Статус", "Дата", "Тип")
REPORT_HEADER = ("Строка", "Тип", "Найден по", "Значение", "ID клиента", "Статус", "Дата", "Результат", "Ошибка")
REPORT_STATES = {"pending": "ожидает загрузки", "invalid": "ошибка в строке", "applied": "загружено",
                 "failed": "не удалось", "skipped": "пропущено"}
REPORT_WORDS = {"contact": "контакт", "company": "компания", "id": "ID", "phone": "телефон", "email": "e-mail"}
FINDBYCOMM_VALUES = 20  # crm.duplicate.findbycomm takes at most 20 values per call
BATCH_SIZE = 50  # commands per `batch` call
STAGE_CHUNK = 1000  # rows inserted per INSERT
# Rows matched by phone or e-mail inside the upload request: a few calls, a second or two at the
# portal's pace. A larger file is staged as "matching" and matched by the worker with a progress
# bar: 10,000 phones cost about 210 calls, minutes at 2 calls a second, far past a request's timeout.
INLINE_MATCH_ROWS = 1000


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


class Batcher(Protocol):
    """The part of addon.bitrix.client.PortalClient that matching needs."""

    def batch(self, commands: dict[str, tuple[str, dict]], halt: bool = False) -> Any: ...


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


# --- reading the file -------------------------------------------------------------------------
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
    from openpyxl import load_workbook

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

    return Table([_cell_text(h) for h in header], rows)


def _cell_text(value: Any) -> str:
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


# --- validating a row -------------------------------------------------------------------------
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
    import phonenumbers

    from addon.phones import normalize_phone

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
        if not any(cells) or _cell_text(cells[0]).startswith("#"):
            continue  # blank lines and the template's notes are not rows
        count += 1
        if count > limits.rows:
            raise BulkLoadError(f"the file has more than {limits.rows:,} rows, the most one load takes: "
                                f"split it into files of at most {limits.rows:,} rows")
        data = {name: (_cell_text(cells[i]) if i < len(cells) else "") for name, i in columns.items()}
        yield validate_row(offset + 2, data, options, statuses, default_entity_type, region, today)


# --- matching rows to clients -----------------------------------------------------------------
def match_drafts(client: Batcher, drafts: list[RowDraft], region: str = "RU") -> None:
    """Resolve phones and e-mails to client IDs: batched crm.duplicate.findbycomm (20 values a
    command, 50 commands a call) gives the candidates, whose PHONE/EMAIL are then read back
    (crm.*.list by `@ID`, 50 a command) to know which value is whose. Rows that match nothing, or
    several clients, get an error. Rows with an ID cost no call here: a missing ID is reported by
    the portal when the row is applied (a 100,000-row file of IDs previews without a single call)."""
    for entity_type in ("contact", "company"):
        rows = [d for d in drafts if d.valid and d.entity_type == entity_type and d.match_by in ("phone", "email")]
        if not rows:
            continue
        by_comm: dict[str, dict[str, list[RowDraft]]] = {"phone": {}, "email": {}}
        for d in rows:
            by_comm[d.match_by].setdefault(d.match_value, []).append(d)
        candidates: set[int] = set()
        for kind, values in by_comm.items():
            candidates |= _find_by_comm(client, entity_type, kind, list(values))
        found = _read_comms(client, entity_type, sorted(candidates), region)
        owners: dict[tuple[str, str], set[int]] = {}
        for entity_id, comms in found.items():
            for kind_value in comms:
                owners.setdefault(kind_value, set()).add(entity_id)
        for d in rows:
            ids = owners.get((d.match_by, d.match_value), set())
            if not ids:
                d.errors.append(f"no {entity_type} with {d.match_by} {d.match_value}")
            elif len(ids) > 1:
                d.errors.append(f"several {entity_type}s have {d.match_by} {d.match_value}: IDs "
                                + ", ".join(str(i) for i in sorted(ids)))
            else:
                d.entity_id = next(iter(ids))


def _find_by_comm(client: Batcher, entity_type: str, kind: str, values: list[str]) -> set[int]:
    commands = {}
    for i in range(0, len(values), FINDBYCOMM_VALUES):
        chunk = values[i:i + FINDBYCOMM_VALUES]
        commands[f"f{i // FINDBYCOMM_VALUES}"] = ("crm.duplicate.findbycomm", {
            "type": kind.upper(), "values": chunk, "entity_type": entity_type.upper()})
    ids: set[int] = set()
    for part in _chunks(commands, BATCH_SIZE):
        result = client.batch(part)
        for key, value in result.results.items():
            if isinstance(value, dict):
                ids.update(int(v) for v in value.get(entity_type.upper(), []) or [])
        _raise_first_error(result)
    return ids


def _read_comms(client: Batcher, entity_type: str, ids: list[int], region: str) -> dict[int, set[tuple[str, str]]]:
    """{entity ID: {("phone", E.164), ("email", lower-case)}} for the IDs that exist."""
    method = f"crm.{entity_type}.list"
    commands = {}
    for i in range(0, len(ids), 50):  # a list page holds 50 rows
        commands[f"l{i // 50}"] = (method, {"filter": {"@ID": ids[i:i + 50]},
                                            "select": ["ID", "PHONE", "EMAIL"], "start": -1})
    found: dict[int, set[tuple[str, str]]] = {}
    for part in _chunks(commands, BATCH_SIZE):
        result = client.batch(part)
        _raise_first_error(result)
        for rows in result.results.values():
            for item in rows or []:
                comms: set[tuple[str, str]] = set()
                for entry in item.get("PHONE") or []:
                    phone = normalize_import_phone(entry.get("VALUE", ""), region)
                    if phone:
                        comms.add(("phone", phone))
                for entry in item.get("EMAIL") or []:
                    if entry.get("VALUE"):
                        comms.add(("email", str(entry["VALUE"]).strip().lower()))
                found[int(item["ID"])] = comms
    return found


def _raise_first_error(result: Any) -> None:
    errors = getattr(result, "errors", None) or {}
    if errors:
        raise next(iter(errors.values()))


def _chunks(commands: dict, size: int) -> Iterator[dict]:
    items = list(commands.items())
    for i in range(0, len(items), size):
        yield dict(items[i:i + size])


def mark_duplicates(drafts: Iterable[RowDraft]) -> None:
    """One client, one row: a later row for a client already in the file is refused."""
    first: dict[tuple[str, int], int] = {}
    for d in drafts:
        if not d.valid or d.entity_id is None:
            continue
        key = (d.entity_type, d.entity_id)
        if key in first:
            d.errors.append(f"the same {d.entity_type} {d.entity_id} is already in row {first[key]}")
        else:
            first[key] = d.row_no


# --- storing the job --------------------------------------------------------------------------
@dataclass
class StagedImport:
    job_id: int
    total_rows: int
    valid_rows: int
    invalid_rows: int
    match_run_id: int | None = None  # the worker matches the rows first (see INLINE_MATCH_ROWS)


def needs_match(draft: RowDraft) -> bool:
    """A valid row that names its client by phone or e-mail: the portal must say which it is."""
    return draft.valid and draft.entity_id is None and draft.match_by in ("phone", "email")


def stage_import(session: Session, portal_id: int, filename: str, drafts: list[RowDraft],
                 created_by: int | None, now: dt.datetime, status: str = "preview") -> StagedImport:
    """Store the validated rows as an ImportJob in `preview` (or `matching`) (the caller commits)."""
    valid = sum(1 for d in drafts if d.valid)
    job = ImportJob(portal_id=portal_id, filename=filename[:255], status=status, total_rows=len(drafts),
                    valid_rows=valid, applied_rows=0, created_by=created_by, created_at=now)
    session.add(job)
    session.flush()
    for i in range(0, len(drafts), STAGE_CHUNK):  # the row dicts of one chunk at a time
        session.execute(insert(ImportRow), [_row_values(job.id, d) for d in drafts[i:i + STAGE_CHUNK]])
    return StagedImport(job.id, len(drafts), valid, len(drafts) - valid)


def _row_values(job_id: int, d: RowDraft) -> dict[str, Any]:
    return {
        "job_id": job_id, "row_no": d.row_no,
        "data": dict(d.data, **({"status_on": d.status_on.isoformat()} if d.status_on else {}),
                     **({"match_by": d.match_by, "match_value": d.match_value} if d.match_by else {})),
        "entity_type": d.entity_type, "entity_id": d.entity_id, "status": d.status,
        "state": "pending" if d.valid else "invalid", "error": "; ".join(d.errors) or None,
    }


def prepare_import(session: Session, client: Batcher | None, portal_id: int, filename: str, content: bytes,
                   options: Options, created_by: int | None, now: dt.datetime, today: dt.date,
                   default_entity_type: str = "contact", region: str = "RU",
                   inline_match_rows: int | None = None, limits: ImportLimits = ImportLimits()) -> StagedImport:
    """Read, validate, match (when a client is given) and stage a file; nothing reaches the portal.
    With `inline_match_rows`, a file with more rows to match by phone or e-mail is staged as
    `matching` with a queued JobRun(kind="import_match"): the worker matches it (worker.imports)."""
    drafts = list(parse_rows(filename, content, options, default_entity_type, region, today, limits))
    if not drafts:
        raise BulkLoadError("the file has a header but no rows")
    to_match = sum(1 for d in drafts if needs_match(d))
    if client is not None and inline_match_rows is not None and to_match > inline_match_rows:
        mark_duplicates(drafts)  # rows by ID now; matched rows once the worker has matched them
        staged = stage_import(session, portal_id, filename, drafts, created_by, now, status="matching")
        staged.match_run_id = queue_match(session, staged.job_id, portal_id, to_match, now)
        return staged
    if client is not None:
        match_drafts(client, drafts, region)
    mark_duplicates(drafts)
    return stage_import(session, portal_id, filename, drafts, created_by, now)


def queue_match(session: Session, job_id: int, portal_id: int, rows: int, now: dt.datetime) -> int:
    """The worker's run matching a staged file's rows (its progress bar counts them)."""
    from addon.models import JobRun

    run = JobRun(portal_id=portal_id, kind="import_match", key=f"import-match:{job_id}", status="queued",
                 as_of=now, params={"import_job_id": job_id}, progress_done=0, progress_total=rows, created_at=now)
    session.add(run)
    session.flush()
    return run.id


def queue_import(session: Session, job: ImportJob, now: dt.datetime, requeue: bool = True) -> int:
    """Queue an import for the worker: the job goes `queued` and a JobRun(kind="import") is added.
    Returns the JobRun id (the one the progress bar polls); queuing twice returns the same run, and
    re-queues it if it had stopped before the end."""
    from addon.models import JobRun

    key = f"import:{job.id}"
    run = session.scalars(select(JobRun).where(JobRun.key == key)).first()
    if run is None:
        run = JobRun(portal_id=job.portal_id, kind="import", key=key, status="queued", as_of=now,
                     params={"import_job_id": job.id}, progress_done=0, progress_total=job.valid_rows,
                     created_at=now)
        session.add(run)
    elif requeue and run.status in ("running", "failed") and job.status != "done":
        # Asked again for a load that stopped (its worker died, the portal failed): queue it again.
        # Harmless if it is in fact still running: the portal's lease keeps a second worker off,
        # and the rerun applies only the rows still pending.
        run.status, run.error = "queued", None
    if job.status == "preview":
        session.execute(update(ImportJob).where(ImportJob.id == job.id).values(status="queued"))
    session.flush()
    return run.id


def preview_errors(session: Session, job_id: int, limit: int = 200) -> list[ImportRow]:
    return list(session.scalars(select(ImportRow).where(ImportRow.job_id == job_id, ImportRow.state == "invalid")
                                .order_by(ImportRow.row_no).limit(limit)))


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
    from openpyxl import Workbook

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
