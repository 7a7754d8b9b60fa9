"""Loss actions (supervisor, round robin, transfer) and the day's messages in ru and en."""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from addon.options import LOST, NEW, Options
from addon.rules import (Department, DigestItem, Entity, LossPlan, Org, Step, build_messages, feed_item,
                         feed_text, find_supervisor, items_for_steps, loss_plan, revert_item,
                         template_preview, timeline_text, warning_item)

DAY = dt.date(2026, 3, 10)


def org() -> Org:
    # 1 company (head 100) ← 2 sales (head 200) ← 3 team A (head 300); 4 team B (head 400, inactive)
    return Org(
        departments={1: Department(1, None, 100), 2: Department(2, 1, 200),
                     3: Department(3, 2, 300), 4: Department(4, 2, 400)},
        user_departments={100: [1], 200: [2], 300: [3], 301: [3], 400: [4], 401: [4], 500: [99]},
        active_users={100, 200, 300, 301, 401, 10, 11, 13},
    )


def test_supervisor_is_the_head_of_the_users_department():
    assert find_supervisor(org(), 301) == 300


def test_supervisor_walks_up_when_the_user_is_the_head():
    assert find_supervisor(org(), 300) == 200
    assert find_supervisor(org(), 200) == 100
    assert find_supervisor(org(), 100) is None  # the top has nobody above


def test_supervisor_walks_up_past_an_inactive_head():
    assert find_supervisor(org(), 401) == 200


def test_unknown_users_and_departments_have_no_supervisor():
    assert find_supervisor(org(), 999) is None
    assert find_supervisor(org(), 500) is None
    assert find_supervisor(org(), None) is None


def test_a_department_cycle_does_not_hang():
    o = Org(departments={1: Department(1, 2, 7), 2: Department(2, 1, 7)}, user_departments={7: [1]},
            active_users={7})
    assert find_supervisor(o, 7) is None


def test_loss_plan_defaults_only_tell():
    plan = loss_plan(Options(), 301, org(), 0)
    assert plan == LossPlan(open_to_all=False, new_assignee=None, notify_manager=True,
                            supervisor_id=300, next_pool_cursor=0)


def test_loss_plan_open_to_all_and_transfer_to_user():
    opts = replace(Options(), open_to_all_on_loss=True, transfer_mode="user", transfer_user_id=10,
                   notify_supervisor_on_loss=False, notify_manager_on_loss=False)
    plan = loss_plan(opts, 301, org())
    assert plan.open_to_all and plan.new_assignee == 10
    assert not plan.notify_manager and plan.supervisor_id is None
    assert loss_plan(opts, 10, org()).new_assignee is None  # not to the manager who lost it


def test_loss_plan_transfer_to_supervisor():
    opts = replace(Options(), transfer_mode="supervisor")
    assert loss_plan(opts, 300, org()).new_assignee == 200


def test_round_robin_skips_inactive_users_and_the_manager():
    opts = replace(Options(), transfer_mode="pool", transfer_pool=(10, 12, 11, 13))  # 12 inactive
    cursor, got = 0, []
    for _ in range(5):
        plan = loss_plan(opts, 11, org(), cursor)
        got.append(plan.new_assignee)
        cursor = plan.next_pool_cursor
    assert got == [10, 13, 10, 13, 10]
    cursor, got = 0, []
    for _ in range(4):
        plan = loss_plan(opts, 301, org(), cursor)
        got.append(plan.new_assignee)
        cursor = plan.next_pool_cursor
    assert got == [10, 11, 13, 10]


def test_round_robin_with_nobody_eligible_keeps_the_client_and_the_cursor():
    opts = replace(Options(), transfer_mode="pool", transfer_pool=(12, 11))
    plan = loss_plan(opts, 11, org(), 1)
    assert plan.new_assignee is None and plan.next_pool_cursor == 1


# --- items -------------------------------------------------------------------------------------

def test_items_for_a_loss_tell_manager_supervisor_and_new_assignee():
    plan = LossPlan(False, 10, True, 300, 1)
    steps = [Step("WARM", "COLD", DAY - dt.timedelta(days=3), "decay"), Step("COLD", LOST, DAY, "decay")]
    items = items_for_steps(Options(), steps, entity_type="contact", entity_id=5, title="Иван",
                            manager_id=301, plan=plan)
    assert [(i.kind, i.recipient_id, i.from_status, i.to_status) for i in items] == [
        ("loss", 301, "WARM", LOST), ("loss_supervisor", 300, "WARM", LOST), ("transfer", 10, "WARM", LOST)]


def test_items_for_a_decay_tell_the_manager():
    steps = [Step("HOT", "WARM", DAY, "decay")]
    items = items_for_steps(Options(), steps, entity_type="company", entity_id=7, title="ООО Ромашка",
                            manager_id=301)
    assert items == [DigestItem("decay", 301, "company", 7, "ООО Ромашка", 301, "HOT", "WARM", DAY)]
    assert items_for_steps(Options(), [Step("HOT", "WARM", DAY, "manager")], entity_type="company",
                           entity_id=7, title=None, manager_id=301) == []


def test_warning_item_on_the_warning_day_only():
    e = Entity(NEW, DAY - dt.timedelta(days=7))  # due DAY+3, warn DAY
    item = warning_item(Options(), e, DAY, entity_type="contact", entity_id=1, title="A", manager_id=5)
    assert item == DigestItem("warning", 5, "contact", 1, "A", 5, NEW, LOST, DAY + dt.timedelta(days=3))
    assert warning_item(Options(), e, DAY + dt.timedelta(days=1), entity_type="contact", entity_id=1,
                        title="A", manager_id=5) is None


# --- messages ----------------------------------------------------------------------------------

def _items():
    return [
        DigestItem("warning", 5, "contact", 1, "Иван Петров", 5, NEW, LOST, dt.date(2026, 3, 13)),
        DigestItem("decay", 5, "company", 2, "ООО Ромашка", 5, "HOT", "WARM", DAY),
        DigestItem("loss", 5, "contact", 3, "", 5, "COLD", LOST, DAY),
        DigestItem("loss_supervisor", 9, "contact", 3, "", 5, "COLD", LOST, DAY),
    ]


def test_merged_digest_is_one_message_per_recipient_per_day_in_russian():
    msgs = build_messages(Options(), DAY, _items() + _items()[:1], {5: "Анна Смирнова"})
    assert [(m.recipient_id, m.key, m.kind) for m in msgs] == [
        (5, "digest:5:2026-03-10", "digest"), (9, "digest:9:2026-03-10", "digest")]
    lines = msgs[0].text.split("\n")
    assert lines[0] == "[B]Не забыт: сводка за 10.03.2026[/B]"
    assert lines[1:] == [
        "• Клиент [URL=/crm/contact/details/3/]Контакт №3[/URL] потерян: статус «Пропал». Позвоните ему!",
        "• Клиент [URL=/crm/company/details/2/]ООО Ромашка[/URL]: статус сменился с «Горячий» на «Тёплый».",
        "• Клиент [URL=/crm/contact/details/1/]Иван Петров[/URL] (Новый) сменит статус на «Пропал» 13.03.2026,"
        " если с ним не связаться.",
    ]
    assert msgs[1].text.endswith(
        "• Менеджер Анна Смирнова потерял клиента [URL=/crm/contact/details/3/]Контакт №3[/URL].")


def test_separate_messages_in_english():
    opts = replace(Options(), merge_notifications=False, language="en")
    msgs = build_messages(opts, DAY, _items(), {})
    assert [m.key for m in msgs] == ["loss:5:2026-03-10:contact:3", "decay:5:2026-03-10:company:2",
                                     "warning:5:2026-03-10:contact:1", "loss_supervisor:9:2026-03-10:contact:3"]
    assert msgs[2].text == ("Client [URL=/crm/contact/details/1/]Иван Петров[/URL] (Новый) will become "
                            "“Пропал” on 2026-03-13 unless someone calls.")
    assert msgs[3].text == "Manager #5 lost client [URL=/crm/contact/details/3/]Contact #3[/URL]."
    assert all(m.kind != "digest" for m in msgs)


def test_custom_templates_and_placeholders():
    opts = replace(Options(), templates={"decay": "{date}: {link} {from_status}→{to_status} ({manager})",
                                         "digest_header": "Итоги {date}"})
    msgs = build_messages(opts, DAY, [_items()[1]], {5: "Анна"})
    assert msgs[0].text == "[B]Итоги 10.03.2026[/B]\n• 10.03.2026: /crm/company/details/2/ Горячий→Тёплый (Анна)"


def test_revert_message_explains_the_problem():
    opts = replace(Options(), merge_notifications=False, require_call=True)
    item = revert_item(opts, entity_type="contact", entity_id=4, title="Пётр", manager_id=5,
                       rejected_status="HOT", restored_status="COLD", problem="no_call")
    [msg] = build_messages(opts, DAY, [item], {})
    assert msg.text == ("Статус клиента [URL=/crm/contact/details/4/]Пётр[/URL] возвращён на «Холодный»: "
                        "нет звонка клиенту за последние 3 дня.")
    assert msg.key == "revert:5:2026-03-10:contact:4"


def test_titles_cannot_break_the_bb_code():
    item = DigestItem("decay", 5, "contact", 1, "Evil [/URL][B]x", 5, "HOT", "WARM", DAY)
    [msg] = build_messages(replace(Options(), merge_notifications=False), DAY, [item], {})
    assert "[URL=/crm/contact/details/1/]Evil (/URL)(B)x[/URL]" in msg.text


def test_unknown_kind_is_an_error_and_no_items_no_messages():
    assert build_messages(Options(), DAY, [], {}) == []
    with pytest.raises(ValueError):
        build_messages(Options(), DAY, [DigestItem("gossip", 5, "contact", 1, "", 5)], {})


@pytest.mark.parametrize("days,word", [(0, "дней"), (1, "день"), (2, "дня"), (5, "дней"), (11, "дней"),
                                       (21, "день"), (22, "дня"), (14, "дней")])
def test_russian_day_plurals_in_the_revert_reason(days, word):
    opts = replace(Options(), merge_notifications=False, call_lookback_days=days)
    item = revert_item(opts, entity_type="contact", entity_id=4, title="Пётр", manager_id=5,
                       rejected_status="HOT", restored_status="COLD", problem="no_call")
    assert build_messages(opts, DAY, [item], {})[0].text.endswith(f" {days} {word}.")


# --- timeline lines, live feed, settings preview -----------------------------------------------

def test_timeline_text_names_the_day_and_the_statuses():
    assert timeline_text(Options(), Step("HOT", "WARM", DAY, "decay")) == \
        "Не забыт, 10.03.2026: статус сменился с «Горячий» на «Тёплый»."
    assert timeline_text(replace(Options(), language="en"), Step("HOT", "WARM", DAY, "manager")) == \
        "Nezabyt, 2026-03-10: the manager changed the status from “Горячий” to “Тёплый”."
    assert timeline_text(replace(Options(), language="en"), Step(None, NEW, DAY, "new")) == \
        "Nezabyt, 2026-03-10: status “Новый”."


def test_timeline_text_skips_what_is_no_change():
    assert timeline_text(Options(), Step("HOT", "HOT", DAY, "decay")) is None
    assert timeline_text(Options(), Step(None, "HOT", DAY, "index")) is None


def test_feed_text_lists_the_clients_in_the_order_given():
    opts = Options()
    items = [feed_item(opts, entity_type="contact", entity_id=1, title="Б", manager_id=5, status="HOT",
                       due_on=DAY + dt.timedelta(days=3)),
             feed_item(opts, entity_type="company", entity_id=2, title="А", manager_id=5, status=NEW,
                       due_on=DAY + dt.timedelta(days=1))]
    assert items[0] == DigestItem("warning", 5, "contact", 1, "Б", 5, "HOT", "WARM", DAY + dt.timedelta(days=3))
    assert feed_text(opts, DAY, items) == (
        "• Клиент [URL=/crm/contact/details/1/]Б[/URL] (Горячий) сменит статус на «Тёплый» 13.03.2026, "
        "если с ним не связаться.\n"
        "• Клиент [URL=/crm/company/details/2/]А[/URL] (Новый) сменит статус на «Пропал» 11.03.2026, "
        "если с ним не связаться.")


def test_template_preview_renders_every_template():
    opts = replace(Options(), templates={"transfer": "{manager} → {entity} ({date})"})
    preview = template_preview(opts, DAY)
    assert set(preview) == {"warning", "decay", "loss_manager", "loss_supervisor", "transfer", "revert",
                            "digest_header"}
    assert preview["transfer"] == "Анна Смирнова → [URL=/crm/contact/details/1/]Контакт №1[/URL] (10.03.2026)"
    assert preview["digest_header"] == "Не забыт: сводка за 10.03.2026"
    assert all("{" not in text for text in preview.values())


def test_org_from_portal_rows():
    o = Org.from_rows(
        [{"ID": "1", "NAME": "Компания", "PARENT": None, "UF_HEAD": "100"},
         {"ID": "3", "NAME": "Отдел", "PARENT": "1", "UF_HEAD": "0"}, {"NAME": "no id"}],
        [{"ID": "100", "ACTIVE": True, "UF_DEPARTMENT": [1]}, {"ID": "7", "ACTIVE": False, "UF_DEPARTMENT": [3]},
         {"ID": "8", "ACTIVE": True, "UF_DEPARTMENT": 3}, {"ACTIVE": True}])
    assert o.departments == {1: Department(1, None, 100), 3: Department(3, 1, None)}
    assert o.user_departments == {100: [1], 7: [3], 8: [3]}
    assert o.active_users == {100, 8}
    assert find_supervisor(o, 8) == 100  # department 3 has no head: walk up


def test_a_template_that_cannot_be_filled_falls_back_to_the_default():
    opts = replace(Options(), merge_notifications=False, templates={"decay": "{entity.name} {nope}"})
    [msg] = build_messages(opts, DAY, [_items()[1]], {})
    assert msg.text == "Клиент [URL=/crm/company/details/2/]ООО Ромашка[/URL]: статус сменился с «Горячий» на «Тёплый»."
