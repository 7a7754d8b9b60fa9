"""Message templates in the settings: only plain {name} placeholders of the known list are saved,
and rendering never reaches into a value's attributes or items (str.format would)."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from werkzeug.datastructures import MultiDict

from addon.options import DEFAULT_TEMPLATES, Options, OptionsError, fill_template, template_problem
from addon.rules import DigestItem, build_messages, template_preview
from addon.rules.digest import feed_title
from tests.ui.conftest import app, client, clock, open_app, page_token, portal, portal_auth  # noqa: F401
from tests.ui.test_settings import settings_form

DAY = dt.date(2026, 11, 22)
REFUSED = ("{entity.foo}", "{entity.__class__.__mro__}", "{entity.__class__.__init__.__globals__}",
           "{link[0]}", "{entity:>999999999}", "{entity!r}", "{0}", "{}", "{nope}", "Клиент {entity", "}")


@pytest.mark.parametrize("text", REFUSED)
def test_anything_but_a_plain_known_name_is_refused_at_save_time(text):
    assert template_problem(text).startswith("unknown placeholder or stray brace")
    with pytest.raises(OptionsError) as refused:
        Options.from_dict({"templates": {"decay": text}})
    assert set(refused.value.errors) == {"templates.decay"}


def test_every_default_template_and_plain_names_pass():
    for texts in DEFAULT_TEMPLATES.values():
        assert all(template_problem(t) is None for t in texts.values())
    assert Options.from_dict({"templates": {"decay": "{{literal}} {entity}: {from_status} → {to_status}"}})


def test_the_settings_page_shows_the_field_error(client, services, portal, portal_auth):
    token = page_token(open_app(client))
    form = [(k, v) for k, v in settings_form(Options(time_zone="Europe/Moscow"), token) if k != "tpl_decay"]
    answer = client.post("/ui/settings", data=MultiDict(form + [("tpl_decay", "{entity.__class__}")]))
    assert answer.status_code == 422  # before: saved, and the next digest read the attribute
    assert "неизвестная подстановка" in answer.get_data(as_text=True)


def test_fill_template_substitutes_and_never_follows_attributes():
    class Sneaky(str):
        secret = "leaked"

    values = {"entity": Sneaky("Anna"), "date": "22.11.2026"}
    assert fill_template("{{x}} {entity}, {date}", values) == "{x} Anna, 22.11.2026"
    for text in ("{entity.secret}", "{entity[0]}", "{entity!r}", "{entity:>20}", "{manager}"):
        with pytest.raises(ValueError):
            fill_template(text, values)


def test_a_template_saved_before_the_check_renders_the_default_not_a_500():
    item = DigestItem("decay", 7, "contact", 1, "Anna", 7, "HOT", "WARM", DAY)
    for text in ("{entity.__class__}", "{entity.foo}", "{link[0]}"):
        opts = replace(Options(), merge_notifications=False, templates={"decay": text})
        [message] = build_messages(opts, DAY, [item], {})
        assert message.text.startswith("Клиент [URL=/crm/contact/details/1/]Anna[/URL]: статус сменился")
        assert "class" not in message.text
        assert template_preview(opts, DAY)["decay"].startswith("Клиент")


def test_the_feed_title_is_rendered_from_its_template():
    opts = replace(Options(), templates={"feed_title": "Скоро сменят статус ({date})"})
    assert feed_title(opts, DAY) == "Скоро сменят статус (22.11.2026)"
