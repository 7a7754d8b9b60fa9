"""The bulk load's whole-file errors and the page's words in Russian: the missing column named in
the admin's words, an upload without a file that says what is missing, one word per key."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from addon.bulkload.files import BulkLoadError, map_columns
from settings_ui.i18n import TEXTS, load_error

from .conftest import open_app, page_token


def test_a_file_without_a_status_column_is_told_in_russian():
    with pytest.raises(BulkLoadError) as caught:
        map_columns(["ID", "Телефон"])
    assert load_error("ru", str(caught.value)) == "в файле нет колонки «Статус» (Status)"
    assert load_error("en", str(caught.value)) == str(caught.value)
    assert set(map_columns(["Телефон", "Статус", "Дата", "Тип"])) == {"phone", "status", "date", "entity_type"}


def test_an_upload_without_a_file_says_what_is_missing(client, portal, portal_auth):
    token = page_token(open_app(client))
    page = client.post("/ui/import", data={"t": token, "entity_type": "contact"})
    text = page.get_data(as_text=True)
    assert page.status_code == 400
    assert "Файл не выбран" in text and "Не удалось прочитать файл: —" not in text


def test_every_text_key_is_given_once_per_language():
    source = (Path(__file__).resolve().parents[2] / "settings_ui" / "i18n.py").read_text(encoding="utf-8")
    ru, en = source.split('"en": {', 1)
    for block in (ru, en.split("\n}\n", 1)[0]):
        keys = re.findall(r'^\s*"([a-z_]+)":|, "([a-z_]+)":', block, re.M)
        flat = [a or b for a, b in keys]
        assert len(flat) == len(set(flat)), sorted({k for k in flat if flat.count(k) > 1})
    assert set(TEXTS["ru"]) == set(TEXTS["en"])
