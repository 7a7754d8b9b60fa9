"""The robots' messages and task texts in Russian and English (BB codes allowed)."""
from __future__ import annotations

TEXTS = {
    "ru": {
        "assigned": "Вам назначен {item}. Возьмите в работу.",
        "sla_new": "Вам передан {item}: {old} не взял его в работу за {minutes} мин. Возьмите в работу.",
        "sla_old": "{item} передан менеджеру {new}: не взят в работу за {minutes} мин.",
        "sla_supervisor": "{item}: {old} не взял в работу за {minutes} мин., передан менеджеру {new}.",
        "sla_give_up": "{item} так и не взят в работу после {times} передач. Ответственный: {old}.",
        "contact_title": "Связаться с клиентом",
        "contact_body": "Вам назначен {item}. Свяжитесь с клиентом до {deadline}.",
        "no_phone_title": "Получить телефон клиента",
        "no_phone_body": "У элемента {item} нет телефона. Клиент не может быть без номера: узнайте и внесите его.",
        "repeat_title": "Повторное обращение клиента",
        "repeat_body": "Клиент {known} обратился снова ({phone}): {item}. Свяжитесь с ним.",
        "fields_title": "Заполнить обязательные поля",
        "fields_body": "В {item} не заполнены поля: {fields}.",
        "fields_back": " Элемент возвращён на предыдущую стадию.",
        "reason_missing": "{item}: укажите причину закрытия — элемент возвращён на предыдущую стадию.",
        "gate_back": "{item} не прошёл стадию «{stage}» и возвращён. Не перепрыгивайте её.",
        "call_title": "Позвонить клиенту: попытка {n} из {total}",
        "call_body": "Клиент не отвечает ({item}). Позвоните с {start} до {end}; напишите в мессенджер.",
        "reminder_title": "Подтвердить встречу с клиентом",
        "reminder_body": "{item}: подтвердите с клиентом встречу {date}.",
        "stuck_header": "Зависли в стадии:",
        "stuck_line": "{item} — стадия {stage}, ответственный {user}, с {since}",
        "nobody": "Нет доступного менеджера в очереди",
    },
    "en": {
        "assigned": "{item} is assigned to you. Please take it in work.",
        "sla_new": "{item} was handed to you: {old} did not take it in {minutes} min. Please take it in work.",
        "sla_old": "{item} was handed to {new}: not taken in work within {minutes} min.",
        "sla_supervisor": "{item}: {old} did not take it in {minutes} min; handed to {new}.",
        "sla_give_up": "{item} was still not taken in work after {times} handovers. Responsible: {old}.",
        "contact_title": "Contact the client",
        "contact_body": "{item} is assigned to you. Contact the client by {deadline}.",
        "no_phone_title": "Get the client's phone",
        "no_phone_body": "{item} has no phone. A client must have a number: find it and enter it.",
        "repeat_title": "Repeat request from a client",
        "repeat_body": "Client {known} came back ({phone}): {item}. Please get in touch.",
        "fields_title": "Fill in the required fields",
        "fields_body": "These fields of {item} are empty: {fields}.",
        "fields_back": " The item was sent back to its previous stage.",
        "reason_missing": "{item}: give the close reason; the item was sent back to its previous stage.",
        "gate_back": "{item} skipped the stage “{stage}” and was sent back.",
        "call_title": "Call the client: attempt {n} of {total}",
        "call_body": "The client does not answer ({item}). Call between {start} and {end}; write in a messenger.",
        "reminder_title": "Confirm the appointment",
        "reminder_body": "{item}: confirm the appointment on {date} with the client.",
        "stuck_header": "Stuck in a stage:",
        "stuck_line": "{item} — stage {stage}, responsible {user}, since {since}",
        "nobody": "No manager in the pool is available",
    },
}


def text(language: str, key: str, **values) -> str:
    table = TEXTS.get(language) or TEXTS["ru"]
    return table[key].format(**values)


def item_link(document_type: str, entity_id: int, title: str | None) -> str:
    label = title or f"{'Лид' if document_type == 'lead' else 'Сделка'} #{entity_id}"
    return f"[URL=/crm/{document_type}/details/{entity_id}/]{label}[/URL]"
