"""Phone normalisation: every format of the seeds becomes one E.164 number; junk becomes None."""
import pytest

from addon.phones import multifield_phones, normalize_phone, normalize_phones, phone_region_for


@pytest.mark.parametrize("raw", ["+79171234578", "89171234578", "8 (917) 123-45-78", "9171234578",
                                 "7 917 123 45 78", "  +7-917-123-45-78 ", "0079171234578"])
def test_russian_formats_become_one_number(raw):
    assert normalize_phone(raw) == "+79171234578"


def test_brackets_after_country_code():
    assert normalize_phone("+7(999) 125-99-99") == "+79991259999"


@pytest.mark.parametrize("raw", [None, "", "   ", "abc", "123", "+7 917", "0501234567", "звонить вечером"])
def test_junk_is_none(raw):
    assert normalize_phone(raw) is None


def test_default_region_reads_national_numbers():
    assert normalize_phone("050 123 4567", "UA") == "+380501234567"
    assert normalize_phone("(650) 253-0000", "US") == "+16502530000"
    # an explicit country code wins over the region
    assert normalize_phone("+79171234578", "DE") == "+79171234578"


def test_region_for_portal():
    assert phone_region_for("ru") == "RU"
    assert phone_region_for("ua") == "UA"
    assert phone_region_for("en") == "RU"
    assert phone_region_for("en", default="US") == "US"
    assert phone_region_for("ru", country="kz") == "KZ"
    assert phone_region_for(None, country="XX") == "RU"


def test_multifield_and_distinct():
    item = {"PHONE": [{"ID": "1", "VALUE": "8 (917) 123-45-78", "VALUE_TYPE": "WORK"},
                      {"ID": "2", "VALUE": "+79171234578", "VALUE_TYPE": "MOBILE"},
                      {"ID": "3", "VALUE": "junk"}]}
    raw = multifield_phones(item)
    assert raw == ["8 (917) 123-45-78", "+79171234578", "junk"]
    assert normalize_phones(raw) == ["+79171234578"]
    assert multifield_phones({}) == []
