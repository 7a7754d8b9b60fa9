"""Reading and validating a bulk-load file (no portal): CSV and XLSX, phones in any common form,
both date forms, statuses by code or name, per-row errors, duplicates, the templates."""
from __future__ import annotations

import datetime as dt
import io

import pytest

from addon.bulkload.files import BulkLoadError
from addon.bulkload.matching import mark_duplicates
from addon.bulkload.report import template_csv, template_xlsx
from addon.bulkload.rows import normalize_import_phone, parse_rows
from addon.options import Options

TODAY = dt.date(2026, 11, 22)
OPTS = Options()


def rows_of(text: str, filename="load.csv", encoding="utf-8", **kw):
    return list(parse_rows(filename, text.encode(encoding), OPTS, today=TODAY, **kw))


def test_phones_in_any_common_form_normalise():
    assert normalize_import_phone("+79171234578", "RU") == "+79171234578"
    assert normalize_import_phone("89171234578", "RU") == "+79171234578"
    assert normalize_import_phone("+7(999) 125-99-99", "RU") == "+79991259999"
    assert normalize_import_phone("81234657885", "RU") == "+71234657885"  # possible, not allocated: kept
    assert normalize_import_phone("12-34", "RU") is None


def test_csv_with_semicolons_in_windows_1251_and_every_error_kind():
    text = ("ID;Телефон;E-mail;Статус;Дата;Тип\n"
            "10;;;Горячий;01.01.2000 12:34:00;контакт\n"
            ";+7(999) 125-99-99;;warm;01.01.2000;\n"
            ";;Anna@Example.com;ХОЛОДНЫЙ;;company\n"
            "11;;;Ёжик;;\n"
            "12;;;HOT;31.02.2000;\n"
            "13;;;HOT;01.01.2099;\n"
            ";12-34;;HOT;;\n"
            ";;not-an-address;HOT;;\n"
            ";;;HOT;;\n"
            "abc;;;HOT;;\n"
            "14;;;;;\n"
            "15;;;HOT;;робот\n"
            "16;;;В работе;;\n"
            "\n")
    rows = rows_of(text, encoding="cp1251")
    assert [r.row_no for r in rows] == list(range(2, 15))
    good = rows[:3]
    assert [(r.match_by, r.match_value, r.status, r.status_on, r.entity_type) for r in good] == [
        ("id", "10", "HOT", dt.date(2000, 1, 1), "contact"),
        ("phone", "+79991259999", "WARM", dt.date(2000, 1, 1), "contact"),
        ("email", "anna@example.com", "COLD", None, "company")]
    assert all(r.valid for r in good)
    errors = {r.row_no: r.errors[0] for r in rows[3:]}
    assert "unknown status «Ёжик»" in errors[5]
    assert "not like 01.01.2000" in errors[6]
    assert "in the future" in errors[7]
    assert "not a phone number" in errors[8]
    assert "not an address" in errors[9]
    assert "no ID, phone or e-mail" in errors[10]
    assert "is not a number" in errors[11]
    assert "status is empty" in errors[12]
    assert "unknown type" in errors[13]
    assert "unknown status «В работе»" in errors[14]  # IN_WORK follows deals, it is never loaded


def test_entity_types_not_tracked_are_refused():
    opts = Options(entity_types=("contact",))
    rows = list(parse_rows("f.csv", b"ID,Status,Type\n1,HOT,company\n", opts, today=TODAY))
    assert rows[0].errors == ["company is not tracked in the settings"]


def test_xlsx_with_real_dates_and_numbers():
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["ID", "Status", "Date"])
    sheet.append([101, "Новый", dt.datetime(2001, 2, 3, 4, 5, 6)])
    sheet.append([102.0, "LOST", dt.date(2001, 2, 4)])
    out = io.BytesIO()
    book.save(out)
    rows = list(parse_rows("f.xlsx", out.getvalue(), OPTS, today=TODAY))
    assert [(r.entity_id, r.status, r.status_on) for r in rows] == [
        (101, "NEW", dt.date(2001, 2, 3)), (102, "LOST", dt.date(2001, 2, 4))]


def test_templates_read_back_as_valid_rows():
    for name, content in (("t.csv", template_csv(OPTS)), ("t.xlsx", template_xlsx(OPTS))):
        rows = list(parse_rows(name, content, OPTS, today=TODAY))
        assert len(rows) == 3 and all(r.valid for r in rows), (name, [r.errors for r in rows])
        assert {r.match_by for r in rows} == {"id", "phone", "email"}


def test_one_client_one_row():
    rows = rows_of("ID,Status\n5,HOT\n5,WARM\n6,HOT\n")
    mark_duplicates(rows)
    assert [r.valid for r in rows] == [True, False, True]
    assert "already in row 2" in rows[1].errors[0]


def test_unreadable_files_say_why():
    with pytest.raises(BulkLoadError, match="Status"):
        rows_of("ID,Name\n1,x\n")
    with pytest.raises(BulkLoadError, match="ID, Phone or Email"):
        rows_of("Status\nHOT\n")
    with pytest.raises(BulkLoadError, match="xlsx"):
        rows_of("x", filename="old.xls")
    with pytest.raises(BulkLoadError, match="spreadsheet"):
        list(parse_rows("broken.xlsx", b"PK\x03\x04 not really a zip", OPTS, today=TODAY))


def test_every_row_error_reads_in_russian():
    from settings_ui.i18n import row_error

    text = ("ID;Телефон;E-mail;Статус;Дата;Тип\n11;;;Ёжик;;\n12;;;HOT;31.02.2000;\n13;;;HOT;01.01.2099;\n"
            ";12-34;;HOT;;\n;;x;HOT;;\n;;;HOT;;\nabc;;;HOT;;\n14;;;;;\n15;;;HOT;;робот\n16;;;HOT;;\n16;;;HOT;;\n")
    rows = rows_of(text)
    mark_duplicates(rows)
    messages = ["; ".join(r.errors) for r in rows if r.errors]
    messages += ["no contact with phone +79170000000", "several companys have email a@b.c: IDs 1, 2",
                 "company is not tracked in the settings", "no contact with ID 5",
                 "the status field on the portal has no item for HOT: save the settings to re-sync it",
                 "the client has an open deal: its status is IN_WORK until the deal closes"]
    assert len(messages) == 16
    for message in messages:
        russian = row_error("ru", message)
        assert russian != message and not any(w in russian for w in (" is ", " with ", " the ")), russian
        assert row_error("en", message) == message
