"""Fitting a message within what the portal takes: numbered parts split between lines, or a cut."""
from __future__ import annotations

import pytest

from addon.rules.messages import MESSAGE_LIMIT, cut_line, cut_message, split_message


def _digest(n: int, width: int = 40) -> str:
    return "\n".join(["[B]Сводка на 02.03.2026[/B]"] + [f"• клиент {i:04d} " + "я" * width for i in range(n)])


def _body(parts: list[str]) -> list[str]:
    """The lines the parts carry, without each part's head line and number."""
    return [line for part in parts for line in part.split("\n")[1:]]


def test_a_message_that_fits_is_one_part_unchanged():
    text = _digest(3)
    assert split_message(text, MESSAGE_LIMIT) == [text]
    assert split_message(text, len(text)) == [text]
    assert cut_message(text, len(text)) == text


def test_a_long_digest_is_split_between_lines_each_part_numbered_under_the_header():
    text = _digest(100)
    parts = split_message(text, 1000)
    n = len(parts)
    assert n > 1
    assert all(len(p) <= 1000 for p in parts)
    assert [p.split("\n")[0] for p in parts] == [f"[B]Сводка на 02.03.2026[/B] ({k}/{n})" for k in range(1, n + 1)]
    assert _body(parts) == text.split("\n")[1:]  # every line once, in order, none cut


def test_parts_stay_within_the_limit_when_the_count_needs_more_digits():
    text = _digest(400, width=10)
    for limit in (200, 300, 1000, 2000):
        parts = split_message(text, limit)
        assert all(len(p) <= limit for p in parts), limit
        assert _body(parts) == text.split("\n")[1:]
        assert parts[-1].split("\n")[0].endswith(f"({len(parts)}/{len(parts)})")
    assert len(split_message(text, 200)) >= 10


def test_without_a_head_the_number_is_the_first_line():
    text = "\n".join(f"• строка {i}" for i in range(50))
    parts = split_message(text, 120, head=False)
    assert [p.split("\n")[0] for p in parts] == [f"({k}/{len(parts)})" for k in range(1, len(parts) + 1)]
    assert _body(parts) == text.split("\n")
    assert all(len(p) <= 120 for p in parts)


def test_a_line_longer_than_a_part_is_cut_with_an_ellipsis():
    text = "\n".join(["Заголовок", "a" * 50, "b" * 500, "c" * 50])
    parts = split_message(text, 200)
    assert all(len(p) <= 200 for p in parts)
    lines = _body(parts)
    assert lines[0] == "a" * 50 and lines[-1] == "c" * 50
    assert lines[1].startswith("bbb") and lines[1].endswith("…")
    assert split_message("z" * 300, 100) == ["z" * 99 + "…"]
    assert cut_line("abc", 3) == "abc" and cut_line("abcd", 3) == "ab…"


def test_an_over_long_header_is_cut_to_leave_room_for_the_lines():
    text = "\n".join(["H" * 1000] + [f"line {i}" for i in range(30)])
    parts = split_message(text, 400)
    assert all(len(p) <= 400 for p in parts)
    assert _body(parts) == text.split("\n")[1:]


def test_a_merged_digest_of_a_big_day_fits_in_parts_of_the_real_limit():
    text = _digest(2700, width=80)  # ~260k characters, the size issue #13 measured
    assert len(text) > 250_000
    parts = split_message(text, MESSAGE_LIMIT)
    assert 13 <= len(parts) <= 15
    assert all(len(p) <= MESSAGE_LIMIT for p in parts)
    assert _body(parts) == text.split("\n")[1:]


@pytest.mark.parametrize("language, tail", [("ru", "…и ещё 7"), ("en", "…and 7 more")])
def test_a_cut_keeps_whole_lines_and_tells_how_many_are_left_out(language, tail):
    text = "\n".join(f"строка {i:02d}" for i in range(10))  # 9 characters a line
    cut = cut_message(text, 41, language)
    assert len(cut) <= 41
    assert cut.split("\n") == ["строка 00", "строка 01", "строка 02", tail]


def test_a_cut_of_one_long_line_ends_with_an_ellipsis():
    assert cut_message("Не забыт: " + "я" * 100, 20) == "Не забыт: " + "я" * 9 + "…"
