"""Hostile bulk-load files: too large, too many rows, zip bombs, IDs past the columns' range,
UTF-16 text, and cells that a spreadsheet would run as formulas in the files we hand back."""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import zipfile

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from addon.bulkload.files import BulkLoadError, ImportLimits
from addon.bulkload.report import csv_safe, report_csv, template_csv, template_xlsx
from addon.bulkload.rows import parse_rows
from addon.bulkload.staging import prepare_import
from addon.config import Settings
from addon.models import ImportJob, ImportRow
from addon.options import Options, StatusDef, default_statuses
from bench.import_memory import xlsx_bomb
from tests.ui.conftest import app, client, clock, open_app, page_token, portal, portal_auth  # noqa: F401

TODAY = dt.date(2026, 11, 22)
NOW = dt.datetime(2026, 11, 22, 10, 0)
OPTS = Options()
MB = 1024 * 1024
SMALL = ImportLimits(file_bytes=1 * MB, rows=50, unpacked_bytes=1 * MB)


@pytest.fixture
def settings(settings):
    """The app's limits made small, so each is crossed by a small file."""
    return dataclasses.replace(settings, max_upload_bytes=SMALL.file_bytes, max_import_rows=SMALL.rows,
                               max_xlsx_unpacked_bytes=SMALL.unpacked_bytes)


def drafts(content: bytes, filename="load.csv", limits=ImportLimits(), opts=OPTS):
    return list(parse_rows(filename, content, opts, today=TODAY, limits=limits))


def id_csv(rows: int) -> bytes:
    return ("ID;Status\n" + "".join(f"{i};HOT\n" for i in range(1, rows + 1))).encode()


def upload(client, token: str | None, content: bytes, filename="load.csv", **kw):
    """The import form as the page posts it (its action carries the page token too). The body is
    built in memory: the test client would spool a large one to a file it never closes."""
    fields = {"entity_type": "contact", "file": FileStorage(io.BytesIO(content), filename, content_type="text/csv")}
    if token:
        fields["t"] = token
    boundary, body = encode_multipart(fields)
    return client.post("/ui/import" + (f"?t={token}" if token else ""), data=body,
                       content_type=f"multipart/form-data; boundary={boundary}", **kw)


def jobs(services) -> int:
    with services.sessions() as session:
        return session.scalar(select(func.count()).select_from(ImportJob))


# --- 4. the size of the upload, the rows, the unpacked spreadsheet -----------------------------
def test_the_defaults_are_the_settings():
    settings = Settings.from_env(env={"DATABASE_URL": "sqlite://", "NEZABYT_ENV": "test"})
    assert ImportLimits.of(settings) == ImportLimits() == ImportLimits(10 * MB, 200_000, 100 * MB)
    small = Settings.from_env(env={"DATABASE_URL": "sqlite://", "NEZABYT_ENV": "test", "NEZABYT_MAX_UPLOAD_MB": "2",
                                   "NEZABYT_MAX_IMPORT_ROWS": "500", "NEZABYT_MAX_XLSX_UNPACKED_MB": "20"})
    assert ImportLimits.of(small) == ImportLimits(2 * MB, 500, 20 * MB)


def test_an_upload_over_the_limit_is_a_413_naming_it_and_is_never_read(client, services, portal, portal_auth):
    token = page_token(open_app(client))
    answer = upload(client, token, b"ID;Status\n" + b"1;HOT\n" * (2 * MB // 6))
    assert answer.status_code == 413
    page = answer.get_data(as_text=True)
    assert "Файл больше 1 МБ" in page and 'id="pane-import"' in page and "flash error" in page
    assert jobs(services) == 0
    english = page_token(open_app(client, lang="en"))
    assert "The file is over 1 MB" in upload(client, english, b"x" * (2 * MB)).get_data(as_text=True)


def test_an_upload_over_the_limit_without_a_page_token_still_says_why(client, services, portal):
    answer = upload(client, None, b"x" * (2 * MB), headers={"Accept-Language": "en-US,en;q=0.9"})
    assert answer.status_code == 413
    assert "Split it into several files" in answer.get_data(as_text=True)
    assert jobs(services) == 0


def test_a_file_within_the_limits_loads_through_the_page(client, services, portal, portal_auth):
    token = page_token(open_app(client))
    assert upload(client, token, id_csv(SMALL.rows)).status_code == 200
    assert jobs(services) == 1


def test_too_many_rows_are_refused_naming_the_limit(client, services, portal, portal_auth):
    token = page_token(open_app(client))
    answer = upload(client, token, id_csv(SMALL.rows + 1))
    assert answer.status_code == 400 and "more than 50 rows" in answer.get_data(as_text=True)
    assert jobs(services) == 0


def test_the_default_row_limit_is_200000():
    content = id_csv(200_001)
    assert len(content) < 10 * MB  # within the upload limit: the rows are what is refused
    with pytest.raises(BulkLoadError, match="more than 200,000 rows"):
        drafts(content)


def test_blank_lines_are_not_rows():
    content = b"ID;Status\n" + b"\n" * 500 + b"1;HOT\n" + b";;\n" * 500
    assert len(drafts(content, limits=ImportLimits(rows=1))) == 1


def test_a_file_over_the_size_limit_is_refused_by_the_reader_too():
    with pytest.raises(BulkLoadError, match="more than the 1 MB allowed"):
        drafts(b"ID;Status\n" + b"1;HOT\n" * (MB // 6 + 1), limits=SMALL)


def test_a_zip_bomb_is_refused_before_openpyxl_opens_it():
    bomb = xlsx_bomb(3_000_000)  # the measured case: 0.4 MB zipped, 147 MB and 3 M rows unzipped
    assert len(bomb) < 1 * MB
    with pytest.raises(BulkLoadError, match=r"unpacks to 1\d\d MB, more than the 100 MB allowed"):
        drafts(bomb, "bomb.xlsx")


def test_a_spreadsheet_within_the_unpacked_limit_but_over_the_rows_is_refused_by_rows():
    out = io.BytesIO()
    book = Workbook()
    sheet = book.active
    sheet.append(["ID", "Status"])
    for i in range(1, 62):
        sheet.append([i, "HOT"])
    sheet.cell(row=100_000, column=16_000, value="far away")  # a gap openpyxl fills, and a wide row
    book.save(out)
    with pytest.raises(BulkLoadError, match="more than 50 rows"):
        drafts(out.getvalue(), "wide.xlsx", limits=SMALL)
    # The far cell is past the columns the file uses: its row is blank to us, not a 62nd row.
    assert len(drafts(out.getvalue(), "wide.xlsx", limits=ImportLimits(rows=61))) == 61


def test_a_damaged_zip_member_is_a_clear_error():
    out = io.BytesIO()
    book = Workbook()
    book.active.append(["ID", "Status"])
    book.active.append([1, "HOT"])
    book.save(out)
    data = bytearray(out.getvalue())
    source = zipfile.ZipFile(io.BytesIO(bytes(data)))
    info = source.getinfo("xl/worksheets/sheet1.xml")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF  # the sheet's deflated bytes, corrupted
    with pytest.raises(BulkLoadError, match="cannot read the spreadsheet"):
        drafts(bytes(data), "damaged.xlsx")


# --- 8. IDs past the columns' range ----------------------------------------------------------------
def test_a_40_digit_id_is_a_row_error_and_the_file_still_stages(services, portal):
    content = ("ID;Status\n" + "9" * 40 + ";HOT\n12;HOT\n").encode()
    with services.sessions() as session:
        staged = prepare_import(session, None, portal, "ids.csv", content, OPTS, 1, NOW, TODAY)
        session.commit()
        errors = session.scalars(select(ImportRow.error).where(ImportRow.job_id == staged.job_id)
                                 .order_by(ImportRow.row_no)).all()
    assert (staged.total_rows, staged.valid_rows) == (2, 1)
    assert errors[0] == f"ID «{'9' * 40}» is not a number" and errors[1] is None


# --- 11. text encodings -------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig", "utf-32", "cp1251"])
def test_csv_in_utf16_and_other_encodings_with_a_bom_reads(encoding):
    text = "ID;Статус\n10;Горячий\n11;Тёплый\n"
    raw = text.encode(encoding)
    if encoding == "utf-16-be":
        raw = "\ufeff".encode(encoding) + raw  # Excel writes BOM'd little-endian; big-endian too
    rows = drafts(raw)
    assert [(r.entity_id, r.status) for r in rows] == [(10, "HOT"), (11, "WARM")]


def test_utf16_without_a_bom_is_refused_asking_for_utf8():
    with pytest.raises(BulkLoadError, match="save it as CSV UTF-8"):
        drafts("ID;Статус\n10;Горячий\n".encode("utf-16-le"))


# --- 7. formula injection in the files we produce ----------------------------------------------------
def test_csv_safe_quotes_what_a_spreadsheet_would_run():
    for cell in ("=1+2@evil.com", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "=", "-"):
        assert csv_safe(cell) == "'" + cell
    for cell in ("+79991259999", "-5", "client@example.com", "Горячий", 42, None, ""):
        assert csv_safe(cell) == cell


def test_the_report_quotes_formula_cells(services, portal):
    content = "ID;E-mail;Статус\n;=1+2@evil.com;HOT\n;+cmd@evil.com;HOT\n;-2+3@evil.com;HOT\n".encode()
    with services.sessions() as session:
        staged = prepare_import(session, None, portal, "evil.csv", content, OPTS, 1, NOW, TODAY)
        session.commit()
        report = list(csv.reader(io.StringIO("".join(report_csv(session, staged.job_id))), delimiter=";"))
    values = [row[3] for row in report[1:]]
    assert values == ["'=1+2@evil.com", "'+cmd@evil.com", "'-2+3@evil.com"]
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in report for cell in row)


def test_the_templates_quote_a_status_named_like_a_formula():
    evil = Options(statuses=tuple(StatusDef(s.code, '=HYPERLINK("http://evil.test","x")') if s.code == "NEW" else s
                                  for s in default_statuses()))
    rows = list(csv.reader(io.StringIO(template_csv(evil).decode("utf-8-sig")), delimiter=";"))
    assert rows[1][3] == "'=HYPERLINK(\"http://evil.test\",\"x\")"
    book = load_workbook(io.BytesIO(template_xlsx(evil)))
    cells = [c for row in book.active.iter_rows() for c in row if c.value is not None]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    assert '=HYPERLINK("http://evil.test","x")' in [c.value for c in cells]
