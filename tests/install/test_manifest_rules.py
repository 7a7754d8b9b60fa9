"""The pure parts of installation: enumeration list edits, token URL, offsets, the BX24.js source."""
from __future__ import annotations

from click.testing import CliRunner

from addon.cli import main
from addon.options import Options, StatusDef
from install.manifest_data import desired_events, reason_items, status_items
from install.manifest_diff import list_changes
from install.pages import bx24_script_url
from install.proof import utc_offset_name
from addon.bitrix.tokens import token_url


def test_list_changes_renames_in_place_adds_new_codes_and_deletes_dropped_ones():
    current = [{"ID": "41", "XML_ID": "NEW", "VALUE": "Новый", "SORT": "10"},
               {"ID": "42", "XML_ID": "HOT", "VALUE": "Горячий", "SORT": "20"},
               {"ID": "43", "XML_ID": "GONE", "VALUE": "Удалённый", "SORT": "30"},
               {"ID": "44", "XML_ID": "", "VALUE": "Пропал", "SORT": "40"}]
    desired = [{"XML_ID": "NEW", "VALUE": "Новый", "SORT": 10},
               {"XML_ID": "HOT", "VALUE": "Очень горячий", "SORT": 20},
               {"XML_ID": "WARM", "VALUE": "Тёплый", "SORT": 30},
               {"XML_ID": "LOST", "VALUE": "Пропал", "SORT": 40}]
    assert list_changes(current, desired) == [
        {"ID": "42", "VALUE": "Очень горячий", "SORT": 20, "XML_ID": "HOT"},
        {"VALUE": "Тёплый", "SORT": 30, "XML_ID": "WARM", "DEF": "N"},
        {"ID": "44", "VALUE": "Пропал", "SORT": 40, "XML_ID": "LOST"},  # adopted by its name
        {"ID": "43", "DEL": "Y"}]


def test_list_changes_is_empty_when_the_field_already_agrees():
    desired = status_items(Options())
    current = [{**item, "ID": str(i), "SORT": str(item["SORT"])} for i, item in enumerate(desired, 1)]
    assert list_changes(current, desired) == []


def test_reason_items_are_the_union_of_all_statuses_reasons():
    statuses = list(Options().statuses)
    statuses[2] = StatusDef("HOT", "Горячий", days=30, reasons=("Купил", "Отказ"))
    statuses[3] = StatusDef("WARM", "Тёплый", days=60, reasons=("Отказ", "Думает"))
    items = reason_items(Options(statuses=tuple(statuses)))
    assert [i["VALUE"] for i in items] == ["Купил", "Отказ", "Думает"]
    assert len({i["XML_ID"] for i in items}) == 3


def test_telephony_scope_adds_the_call_end_event():
    assert "ONVOXIMPLANTCALLEND" not in desired_events("https://app.test", "crm,placement")
    assert desired_events("https://app.test", "crm,telephony")["ONVOXIMPLANTCALLEND"] == "https://app.test/events"


def test_token_url_is_the_authorization_servers():
    assert token_url("https://oauth.bitrix.info/") == "https://oauth.bitrix.info/oauth/token/"
    assert token_url("http://127.0.0.1:8700/auth") == "http://127.0.0.1:8700/auth/oauth/token/"


def test_portal_offset_from_server_time():
    assert utc_offset_name("2026-11-22T23:57:00+03:00") == "+03:00"
    assert utc_offset_name("2026-11-22T15:27:00-05:30") == "-05:30"
    assert utc_offset_name("2026-11-22T20:57:00+00:00") == "UTC"
    assert utc_offset_name("not a time") is None


def test_bx24_js_comes_from_the_devportal_or_from_bitrix24():
    assert bx24_script_url("127.0.0.1:8700") == "//127.0.0.1:8700/bx24.js"
    assert bx24_script_url("acme.bitrix24.ru") == "//api.bitrix24.com/api/v1/"


def test_web_command_is_registered():
    result = CliRunner().invoke(main, ["web", "--help"])
    assert result.exit_code == 0 and "--port" in result.output
