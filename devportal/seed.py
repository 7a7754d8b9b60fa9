"""Realistic seed data for the devportal: departments with heads, managers, clients, deals, call history."""
from __future__ import annotations

import random
from datetime import timedelta

from devportal import crm

MALE = ["Александр", "Алексей", "Андрей", "Антон", "Артём", "Борис", "Вадим", "Виктор", "Владимир", "Дмитрий",
        "Евгений", "Иван", "Игорь", "Кирилл", "Максим", "Михаил", "Николай", "Олег", "Павел", "Роман",
        "Сергей", "Степан", "Юрий", "Ярослав"]
FEMALE = ["Алина", "Анастасия", "Анна", "Валентина", "Вера", "Галина", "Дарья", "Екатерина", "Елена", "Ирина",
          "Ксения", "Людмила", "Марина", "Мария", "Наталья", "Ольга", "Полина", "Светлана", "Татьяна", "Юлия"]
SURNAMES = ["Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов", "Новиков",
            "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров", "Павлов", "Козлов",
            "Степанов", "Николаев", "Орлов", "Андреев", "Макаров", "Никитин", "Захаров", "Зайцев", "Соловьёв",
            "Борисов", "Яковлев", "Григорьев", "Романов", "Воробьёв", "Сергеев", "Кузьмин", "Фролов"]
PATRONYMIC = ["Александрович", "Сергеевич", "Иванович", "Петрович", "Андреевич", "Николаевич", "Викторович"]
COMPANY_WORDS = ["Альфа", "Вектор", "Гранит", "Дельта", "Импульс", "Кедр", "Лидер", "Магистраль", "Меридиан",
                 "Орион", "Прогресс", "Ресурс", "Север", "Сигма", "Спектр", "Стандарт", "Техно", "Урал", "Феникс",
                 "Эталон", "Горизонт", "Старт", "Строй", "Кухни", "Недвижимость", "Автошкола", "Логистик"]
FORMS = ["ООО", "АО", "ИП", "ЗАО"]
DEPARTMENTS = ["Отдел продаж", "Отдел по работе с ключевыми клиентами", "Отдел продаж — регионы",
               "Отдел повторных продаж", "Колл-центр", "Отдел недвижимости"]


def _phone(rng: random.Random) -> str:
    """One number written the many ways managers type them."""
    code = rng.choice(["9", "9", "9", "4"]) + f"{rng.randint(0, 99):02d}"
    a, b, c = rng.randint(100, 999), rng.randint(10, 99), rng.randint(10, 99)
    style = rng.randrange(6)
    if style == 0:
        return f"+7 ({code}) {a}-{b}-{c}"
    if style == 1:
        return f"8{code}{a}{b}{c}"
    if style == 2:
        return f"+7{code}{a}{b}{c}"
    if style == 3:
        return f"8 ({code}) {a}-{b}-{c}"
    if style == 4:
        return f"{code} {a} {b} {c}"
    return f"+7-{code}-{a}-{b}{c}"


def _person(rng: random.Random) -> tuple[str, str, str]:
    female = rng.random() < 0.45
    name = rng.choice(FEMALE if female else MALE)
    last = rng.choice(SURNAMES)
    second = rng.choice(PATRONYMIC)
    if female:
        last = last + "а"
        second = second[:-2] + "на"
    return name, last, second


def seed_portal(portal, departments: int = 3, managers: int = 12, contacts: int = 300, companies: int = 60,
                months_of_calls: int = 6, deals: int | None = None, leads: int = 0, rng_seed: int = 1,
                calls_per_client: float = 1.5) -> dict:
    """Fill the portal without firing events (the data was there before the app came)."""
    rng = random.Random(rng_seed)
    now = portal.now()
    with portal.lock:
        root = 1
        dep_ids = []
        for i in range(departments):
            dep_ids.append(portal.add_department(DEPARTMENTS[i % len(DEPARTMENTS)] + ("" if i < len(DEPARTMENTS)
                                                                                       else f" {i}"), parent=root))
        manager_ids = []
        for i in range(managers):
            name, last, second = _person(rng)
            dep = dep_ids[i % len(dep_ids)] if dep_ids else root
            uid = portal.add_user(name, last, department_id=dep, second_name=second,
                                  position="Руководитель отдела" if i < len(dep_ids) else "Менеджер по продажам",
                                  phone=_phone(rng))
            if i < len(dep_ids):
                portal.set_department_head(dep, uid)
            manager_ids.append(uid)
        # some have left: inactive staff still own clients, as on real portals
        for uid in manager_ids[len(dep_ids):][::6][1:]:
            portal.deactivate_user(uid)
        owners = manager_ids or [1]

        def created_at():
            return now - timedelta(days=rng.randint(30, 720), seconds=rng.randint(0, 86399))

        company_ids = []
        for _ in range(companies):
            when = created_at()
            fields = {"TITLE": f"{rng.choice(FORMS)} «{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_WORDS)}»",
                      "ASSIGNED_BY_ID": rng.choice(owners),
                      "PHONE": [{"VALUE": _phone(rng), "VALUE_TYPE": "WORK"}]}
            rid = portal.add_record("company", fields, user_id=1, when=when, fire=False)
            _modified(portal, "company", rid, when, now, rng)
            company_ids.append(rid)
        contact_ids = []
        for _ in range(contacts):
            when = created_at()
            name, last, second = _person(rng)
            fields = {"NAME": name, "LAST_NAME": last, "SECOND_NAME": second if rng.random() < 0.5 else "",
                      "ASSIGNED_BY_ID": rng.choice(owners),
                      "PHONE": [{"VALUE": _phone(rng), "VALUE_TYPE": rng.choice(["WORK", "MOBILE", "MOBILE"])}]}
            if rng.random() < 0.2:
                fields["PHONE"].append({"VALUE": _phone(rng), "VALUE_TYPE": "HOME"})
            if rng.random() < 0.6:
                fields["EMAIL"] = [{"VALUE": f"client{len(contact_ids) + 1}@example.ru", "VALUE_TYPE": "WORK"}]
            if company_ids and rng.random() < 0.4:
                fields["COMPANY_ID"] = rng.choice(company_ids)
            rid = portal.add_record("contact", fields, user_id=1, when=when, fire=False)
            _modified(portal, "contact", rid, when, now, rng)
            contact_ids.append(rid)
        deal_count = deals if deals is not None else max(1, contacts // 10)
        stages = ["NEW", "PREPARATION", "EXECUTING", "WON", "WON", "LOSE", "APOLOGY"]
        for _ in range(deal_count if (contact_ids or company_ids) else 0):
            when = created_at()
            fields = {"TITLE": f"Сделка: {rng.choice(COMPANY_WORDS).lower()}", "STAGE_ID": rng.choice(stages),
                      "OPPORTUNITY": f"{rng.randint(10, 900) * 1000}.00", "ASSIGNED_BY_ID": rng.choice(owners)}
            if contact_ids:
                fields["CONTACT_ID"] = rng.choice(contact_ids)
            if company_ids and rng.random() < 0.5:
                fields["COMPANY_ID"] = rng.choice(company_ids)
            if fields["STAGE_ID"] in ("WON", "LOSE", "APOLOGY"):
                fields["CLOSEDATE"] = portal.iso(when + timedelta(days=rng.randint(1, 25)))
            rid = portal.add_record("deal", fields, user_id=1, when=when, fire=False)
            _modified(portal, "deal", rid, when, now, rng)
        for _ in range(leads):
            name, last, _second = _person(rng)
            when = created_at()
            portal.add_record("lead", {"TITLE": f"Заявка: {name} {last}", "NAME": name, "LAST_NAME": last,
                                       "ASSIGNED_BY_ID": rng.choice(owners),
                                       "PHONE": [{"VALUE": _phone(rng), "VALUE_TYPE": "WORK"}]},
                              user_id=1, when=when, fire=False)
        calls = 0
        horizon = months_of_calls * 30 * 86400
        targets = [("contact", c) for c in contact_ids] + [("company", c) for c in company_ids]
        for _ in range(int(len(targets) * calls_per_client) if horizon else 0):
            entity, rid = rng.choice(targets)
            record = portal.records[entity][rid]
            start = now - timedelta(seconds=rng.randint(3600, horizon))
            completed = rng.random() < 0.85
            _call_row(portal, entity, rid, int(record["ASSIGNED_BY_ID"]), start, completed,
                      rng.choice((1, 2, 2)), rng.randint(20, 900), record)
            calls += 1
    return {"departments": len(dep_ids), "managers": len(manager_ids), "contacts": len(contact_ids),
            "companies": len(company_ids), "deals": deal_count if (contact_ids or company_ids) else 0,
            "leads": leads, "calls": calls, "manager_ids": manager_ids, "department_ids": dep_ids}


def _modified(portal, entity, rid, created, now, rng) -> None:
    record = portal.records[entity][rid]
    span = max(1, int((now - created).total_seconds()))
    record["DATE_MODIFY"] = portal.iso(created + timedelta(seconds=rng.randint(0, span)))


def _call_row(portal, entity, rid, user_id, start, completed, direction, duration, record) -> None:
    """A historical call, written directly (no events) for speed."""
    aid = portal._next("activity")
    end = start + timedelta(seconds=duration)
    phone = next((e["VALUE"] for e in record.get("PHONE") or []), "")
    owner_type = crm.OWNER_TYPE[entity]
    stamp_start, stamp_end = portal.iso(start), portal.iso(end)
    portal.activities[aid] = {
        "ID": str(aid), "OWNER_ID": str(rid), "OWNER_TYPE_ID": str(owner_type), "TYPE_ID": "2",
        "PROVIDER_ID": "VOXIMPLANT_CALL", "PROVIDER_TYPE_ID": "CALL", "PROVIDER_GROUP_ID": None,
        "ASSOCIATED_ENTITY_ID": "0",
        "SUBJECT": ("Входящий звонок " if direction == 1 else "Исходящий звонок ") + phone,
        "CREATED": stamp_end, "LAST_UPDATED": stamp_end, "START_TIME": stamp_start, "END_TIME": stamp_end,
        "DEADLINE": stamp_end, "COMPLETED": "Y" if completed else "N", "STATUS": "2" if completed else "1",
        "RESPONSIBLE_ID": str(user_id), "PRIORITY": "2", "NOTIFY_TYPE": "0", "NOTIFY_VALUE": "0",
        "DESCRIPTION": "", "DESCRIPTION_TYPE": "1", "DIRECTION": str(direction), "LOCATION": "", "SETTINGS": [],
        "ORIGINATOR_ID": None, "ORIGIN_ID": None, "AUTHOR_ID": str(user_id), "EDITOR_ID": str(user_id),
        "COMMUNICATIONS": [{"TYPE": "PHONE", "VALUE": phone, "ENTITY_ID": str(rid),
                            "ENTITY_TYPE_ID": str(owner_type)}],
        "BINDINGS": [{"OWNER_ID": str(rid), "OWNER_TYPE_ID": str(owner_type)}]}
    if completed and (record.get("LAST_ACTIVITY_TIME") or "") < stamp_end:
        record["LAST_ACTIVITY_TIME"] = stamp_end
        record["LAST_ACTIVITY_BY"] = str(user_id)
