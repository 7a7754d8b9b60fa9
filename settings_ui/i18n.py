"""The settings page's words in Russian (the default) and English."""
from __future__ import annotations

import re

TEXTS: dict[str, dict[str, str]] = {
    "ru": {
        "app_title": "Не забыт",
        "tab_settings": "Настройки", "tab_index": "Индексация и поиск", "tab_import": "Загрузка статусов",
        "tab_dashboard": "Сводка", "tab_robots": "Роботы",
        "catalog_title": "Роботы для воронок",
        "catalog_help": "Роботы появляются в правилах автоматизации сделок и лидов: откройте воронку → «Роботы» → "
                        "«Добавить робота» → «Приложения» и выберите робота «Не забыт», затем заполните его настройки.",
        "catalog_deals": "Роботы сделок", "catalog_leads": "Роботы лидов", "catalog_robot": "Робот",
        "catalog_does": "Что делает", "catalog_settings": "Настройки робота",
        "absent_title": "Отсутствующие менеджеры",
        "absent_help": "Отпуск, больничный: робот распределения не даёт отмеченным новые лиды и сделки, "
                       "а после возвращения — только обычную очередь, без «долга» за пропущенное.",
        "absent_col": "Отсутствует", "absent_save": "Сохранить отсутствующих",
        "absent_saved": "Отсутствующие: {names}.", "nobody": "никого",
        "ranking_title": "Рейтинг месяца", "ranking_help": "Новые лиды и сделки, выданные роботом распределения "
                       "за месяц, и сколько из них дошло до стадии рейтинга (робот «Рейтинг»).",
        "ranking_new": "Выдано", "ranking_converted": "Дошло", "ranking_conversion": "Конверсия",
        "ranking_empty": "За этот месяц робот распределения ещё никого не назначал.",
        "reasons_title": "Причины закрытия", "reasons_empty": "Причин закрытия пока нет.",
        "reason": "Причина", "times": "Раз", "month": "Месяц", "show": "Показать",
        "readonly_note": "Вы видите настройки только для чтения: менять их может администратор портала.",
        "saved": "Настройки сохранены (версия {version}).",
        "save_failed": "Настройки не сохранены: исправьте отмеченные поля.",
        "save": "Сохранить", "preview_changes": "Что изменится?", "saving": "Сохраняем…",
        "new_status_row": "новый статус (строка {n})", "new_code": "новый", "fix_fields": "Исправьте:",
        "page_expired_retry": "Обновляем доступ через Битрикс24…",
        "reopen_app": "Откройте приложение заново (закройте и откройте его в меню портала) — "
                      "несохранённые изменения формы при этом пропадут.",
        "sec_entities": "Рабочие сущности", "contacts": "Контакты", "companies": "Компании",
        "sec_statuses": "Статусы и сроки",
        "statuses_help": "Системные статусы можно только переименовать. Свои статусы можно добавлять, "
                         "переименовывать, переставлять и удалять: они сменяют друг друга сверху вниз, последний — в «Пропал».",
        "col_code": "Код", "col_name": "Название", "col_days": "Дней до смены", "col_warn": "Предупредить за (дн.)",
        "col_reasons": "Обязательные причины (по одной в строке)", "system": "системный",
        "add_status": "Добавить статус", "up": "Выше", "down": "Ниже", "delete": "Удалить",
        "held_by_deal": "пока есть открытая сделка", "terminal": "конечный",
        "sec_calls": "Звонки",
        "reset_on_calls": "Автоматическое обнуление: звонок начинает отсчёт дней заново",
        "require_call": "Без звонка статус не менять (ручная смена без звонка откатывается)",
        "call_lookback_days": "Звонок засчитывается, если был за последние (дней)",
        "default_warn_days": "Предупреждать о смене статуса за (дней, по умолчанию)",
        "new_for_new_entities": "Новым контактам и компаниям ставить статус «Новый»",
        "sec_loss": "Когда клиент пропал",
        "open_to_all_on_loss": "Открыть клиента для всех",
        "transfer_mode": "Передать клиента", "transfer_none": "никому", "transfer_user": "сотруднику",
        "transfer_pool": "по очереди сотрудникам из списка", "transfer_supervisor": "руководителю менеджера",
        "transfer_user_id": "Сотрудник", "transfer_pool_label": "Сотрудники (по очереди)",
        "notify_manager_on_loss": "Сообщить менеджеру", "notify_supervisor_on_loss": "Сообщить руководителю",
        "sec_notify": "Уведомления",
        "notify_time": "Время уведомлений", "time_zone": "Часовой пояс",
        "merge_notifications": "Объединять уведомления в одну сводку в день",
        "timeline_comments": "Писать комментарий в таймлайн клиента при каждой смене статуса",
        "feed_post": "Публиковать в Живой ленте список клиентов, которые скоро сменят статус",
        "feed_post_days": "Показывать в ленте тех, кто сменит статус в ближайшие (дней)",
        "language": "Язык сообщений",
        "sec_templates": "Тексты сообщений",
        "templates_help": "Можно использовать подстановки: ", "template_preview": "Так это будет выглядеть:",
        "tpl_warning": "Предупреждение о скорой смене", "tpl_decay": "Статус сменился",
        "tpl_loss_manager": "Клиент пропал (менеджеру)", "tpl_loss_supervisor": "Клиент пропал (руководителю)",
        "tpl_transfer": "Клиент передан", "tpl_revert": "Смена статуса отменена",
        "tpl_digest_header": "Заголовок сводки", "tpl_feed_title": "Заголовок поста в ленте",
        "whatif_title": "Что изменится при следующем ежедневном запуске",
        "whatif_none": "С новыми сроками ничего не изменится.",
        "whatif_total": "Сменят статус: {count}", "whatif_now": "с текущими настройками: {count}",
        "whatif_moved": "сроки сдвинутся у {count}", "whatif_by_status": "По статусам", "whatif_by_manager": "По менеджерам",
        "whatif_sample": "Примеры", "manager": "Менеджер", "count": "Сколько", "from": "Было", "to": "Станет",
        "client": "Клиент", "due": "Срок",
        "index_title": "Индексация базы",
        "index_help": "Прочитать статусы всех клиентов с портала в служебную таблицу и пересчитать сроки. "
                      "Нужно после загрузки статусов вне приложения.",
        "index_start": "Проиндексировать базу", "progress": "Выполнено {done} из {total}",
        "progress_done": "Готово", "progress_failed": "Ошибка: {error}", "progress_queued": "В очереди…",
        "debug_title": "Поиск клиента по ID", "debug_go": "Показать", "entity_type": "Тип", "entity_id": "ID",
        "contact": "Контакт", "company": "Компания",
        "debug_none": "Такого клиента нет в служебной таблице.",
        "f_status": "Статус", "f_set_on": "Статус установлен", "f_last_call": "Последний звонок",
        "f_due": "Сменится", "f_warn": "Предупреждение", "f_assigned": "Ответственный", "f_previous": "Предыдущий статус",
        "history": "История", "h_date": "Дата", "h_from": "Было", "h_to": "Стало", "h_cause": "Причина",
        "h_by": "Кто", "h_note": "Примечание", "no_history": "Смен статуса ещё не было.",
        "cause_manager": "менеджер", "cause_decay": "истёк срок", "cause_deal": "сделка", "cause_import": "загрузка",
        "cause_revert": "откат", "cause_new": "новый клиент", "cause_index": "индексация",
        "import_title": "Загрузка статусов из файла",
        "import_help": "CSV или XLSX: колонки ID, Телефон или E-mail (по ним ищем клиента), Статус (код или название), "
                       "Дата (01.01.2000 или 01.01.2000 12:34:00), Тип (контакт/компания).",
        "template_csv": "Шаблон CSV", "template_xlsx": "Шаблон XLSX",
        "import_file": "Файл", "import_default_type": "Тип по умолчанию", "import_upload": "Проверить файл",
        "import_preview": "Файл «{name}»: строк {total}, готово к загрузке {valid}, с ошибками {invalid}.",
        "import_matching": "Файл «{name}»: строк {total}. Ищем клиентов портала по телефонам и e-mail — "
                           "предпросмотр откроется сам, когда поиск закончится.",
        "import_errors": "Строки с ошибками", "row": "Строка", "error": "Ошибка",
        "import_apply": "Загрузить {valid} статусов", "import_report": "Скачать отчёт",
        "import_done": "Загрузка завершена", "import_failed": "Не удалось прочитать файл: {error}",
        "portal_blocked": "Битрикс24 заблокировал REST API портала (OVERLOAD_LIMIT): Nezabyt не обращается к порталу, пока блокировку не снимет поддержка Битрикс24; следующая проверка — {until}.",
        "import_recent": "Последние загрузки", "import_state": "Состояние", "import_loaded": "Загружено",
        "import_state_matching": "поиск клиентов", "import_state_preview": "проверен, не загружен",
        "import_state_queued": "в очереди", "import_state_running": "загружается", "import_state_done": "загружен",
        "import_state_failed": "ошибка", "departed": "уволен",
        "dash_title": "Сводка по менеджерам",
        "dash_help": "Сколько клиентов у каждого менеджера и в каком они состоянии.",
        "dash_changes": "Смены статусов по неделям", "decays": "Понижения", "losses": "Пропали", "transfers": "Переданы",
        "at_risk": "Под угрозой на этой неделе", "at_risk_none": "На этой неделе никто не сменит статус.",
        "total": "Всего", "week_of": "неделя с",
        "card_title": "Статус клиента", "card_untracked": "Клиент не отслеживается (пустой статус).",
        "denied_title": "Доступ запрещён",
        "denied_no_token": "Страница открыта без ключа доступа. Откройте приложение из Битрикс24 заново.",
        "denied_expired": "Срок действия страницы истёк. Откройте приложение из Битрикс24 заново.",
        "denied_tampered": "Ключ доступа страницы повреждён или подделан.",
        "denied_no_auth": "Приложение нужно открывать из Битрикс24.",
        "denied_unknown_portal": "Этот портал не установил приложение.",
        "denied_bad_auth": "Битрикс24 не подтвердил ваш вход. Откройте приложение заново.",
        "denied_not_admin": "Менять настройки может только администратор портала.",
        "denied_portal": "Этот клиент принадлежит другому порталу.",
        "warn_redate": "Сроки не пересчитаны: {error}", "warn_sync": "Список статусов на портале не обновлён: {error}",
        "yes": "да", "no": "нет", "status_empty": "пусто",
        "import_no_file": "Файл не выбран: выберите CSV или XLSX со статусами и нажмите «Проверить файл».",
        "ws_title": "Работа обработчика", "ws_last_event": "Последнее обработанное событие",
        "ws_pending": "в очереди: {n}", "ws_daily": "Последний ежедневный прогон",
        "ws_daily_line": "{status}; по плану {due}, начат {started}, закончен {finished}",
        "ws_run_done": "выполнен", "ws_run_running": "идёт", "ws_run_queued": "в очереди",
        "ws_run_failed": "с ошибкой", "ws_none": "ещё не было", "ws_lease": "Кто обрабатывает",
        "ws_free": "никто", "ws_calls": "Вызовов REST", "ws_limits": "не больше {rps} в секунду, запас {burst}",
        "ws_parked": "Приостановлен", "ws_rate_limited": "лимит запросов портала (503)",
        "ws_methods": "методы: {methods}", "ws_error": "ошибка: {error}",
    },
    "en": {
        "app_title": "Nezabyt",
        "ws_title": "Worker", "ws_last_event": "Last event processed", "ws_pending": "{n} pending",
        "ws_daily": "Last daily run", "ws_daily_line": "{status}; due at {due}, started {started}, finished {finished}",
        "ws_run_done": "done", "ws_run_running": "running", "ws_run_queued": "queued", "ws_run_failed": "failed",
        "ws_none": "none yet", "ws_lease": "Lease holder", "ws_free": "free", "ws_calls": "REST calls made",
        "ws_limits": "limit {rps}/s, burst {burst}", "ws_parked": "Parked", "ws_rate_limited": "portal rate limit (503)",
        "ws_methods": "methods: {methods}", "ws_error": "error: {error}",
        "tab_settings": "Settings", "tab_index": "Index & lookup", "tab_import": "Bulk load",
        "tab_dashboard": "Dashboard", "tab_robots": "Robots",
        "catalog_title": "Pipeline robots",
        "catalog_help": "The robots appear in the automation rules of deals and leads: open a pipeline → Robots → "
                        "Add robot → Applications and pick a Nezabyt robot, then fill in its settings.",
        "catalog_deals": "Deal robots", "catalog_leads": "Lead robots", "catalog_robot": "Robot",
        "catalog_does": "What it does", "catalog_settings": "Robot settings",
        "absent_title": "Absent managers",
        "absent_help": "Vacation, sick leave: the distribution robot gives the marked ones no new leads or deals, "
                       "and on return only their usual turn, no backlog for what they missed.",
        "absent_col": "Absent", "absent_save": "Save absences",
        "absent_saved": "Absent: {names}.", "nobody": "nobody",
        "ranking_title": "The month's ranking", "ranking_help": "New leads and deals the distribution robot gave "
                       "out in the month, and how many reached the ranking stage (the Ranking robot).",
        "ranking_new": "Given", "ranking_converted": "Reached", "ranking_conversion": "Conversion",
        "ranking_empty": "The distribution robot has assigned nothing this month yet.",
        "reasons_title": "Close reasons", "reasons_empty": "No close reasons yet.",
        "reason": "Reason", "times": "Times", "month": "Month", "show": "Show",
        "readonly_note": "You see the settings read-only: only a portal admin can change them.",
        "saved": "Settings saved (version {version}).",
        "save_failed": "Settings not saved: fix the marked fields.",
        "save": "Save", "preview_changes": "What would change?", "saving": "Saving…",
        "new_status_row": "new status (row {n})", "new_code": "new", "fix_fields": "Fix:",
        "page_expired_retry": "Renewing access through Bitrix24…",
        "reopen_app": "Open the app again (close it and open it from the portal's menu) — unsaved changes "
                      "in the form are lost then.",
        "sec_entities": "Tracked entities", "contacts": "Contacts", "companies": "Companies",
        "sec_statuses": "Statuses and days",
        "statuses_help": "System statuses can only be renamed. Your own statuses can be added, renamed, "
                         "reordered and deleted: they decay top to bottom, the last one into “Lost”.",
        "col_code": "Code", "col_name": "Name", "col_days": "Days until change", "col_warn": "Warn days before",
        "col_reasons": "Required reasons (one per line)", "system": "system",
        "add_status": "Add a status", "up": "Up", "down": "Down", "delete": "Delete",
        "held_by_deal": "while an open deal exists", "terminal": "terminal",
        "sec_calls": "Calls",
        "reset_on_calls": "Reset on calls: a completed call restarts the day count",
        "require_call": "No change without a call (a manual change with no call is reverted)",
        "call_lookback_days": "A call counts if it was within the last (days)",
        "default_warn_days": "Warn about a change this many days before (default)",
        "new_for_new_entities": "Give new contacts and companies the status “New”",
        "sec_loss": "When a client is lost",
        "open_to_all_on_loss": "Open the client to everyone",
        "transfer_mode": "Hand the client to", "transfer_none": "nobody", "transfer_user": "an employee",
        "transfer_pool": "employees of a pool in turn", "transfer_supervisor": "the manager's supervisor",
        "transfer_user_id": "Employee", "transfer_pool_label": "Employees (in turn)",
        "notify_manager_on_loss": "Message the manager", "notify_supervisor_on_loss": "Message the supervisor",
        "sec_notify": "Notifications",
        "notify_time": "Notification time", "time_zone": "Time zone",
        "merge_notifications": "Merge notifications into one daily digest",
        "timeline_comments": "Add a timeline comment to the client on every change",
        "feed_post": "Post the clients changing status soon to the live feed",
        "feed_post_days": "List in the feed those changing within (days)",
        "language": "Message language",
        "sec_templates": "Message texts",
        "templates_help": "Placeholders you can use: ", "template_preview": "It will read:",
        "tpl_warning": "Warning before a change", "tpl_decay": "Status changed",
        "tpl_loss_manager": "Client lost (to the manager)", "tpl_loss_supervisor": "Client lost (to the supervisor)",
        "tpl_transfer": "Client handed over", "tpl_revert": "Change reverted",
        "tpl_digest_header": "Digest header", "tpl_feed_title": "Live feed post title",
        "whatif_title": "What the next daily run would change",
        "whatif_none": "Nothing would change with the new days.",
        "whatif_total": "Would change status: {count}", "whatif_now": "with the current settings: {count}",
        "whatif_moved": "due dates move for {count}", "whatif_by_status": "By status",
        "whatif_by_manager": "By manager", "whatif_sample": "Examples", "manager": "Manager", "count": "Count",
        "from": "From", "to": "To", "client": "Client", "due": "Due",
        "index_title": "Index the base",
        "index_help": "Read every client's status from the portal into the service table and recompute the dates. "
                      "Needed after statuses were loaded outside the app.",
        "index_start": "Index the base", "progress": "{done} of {total} done",
        "progress_done": "Done", "progress_failed": "Failed: {error}", "progress_queued": "Queued…",
        "debug_title": "Look a client up by ID", "debug_go": "Show", "entity_type": "Type", "entity_id": "ID",
        "contact": "Contact", "company": "Company",
        "debug_none": "This client is not in the service table.",
        "f_status": "Status", "f_set_on": "Status set on", "f_last_call": "Last call", "f_due": "Changes on",
        "f_warn": "Warning on", "f_assigned": "Responsible", "f_previous": "Previous status",
        "history": "History", "h_date": "Date", "h_from": "From", "h_to": "To", "h_cause": "Cause", "h_by": "By",
        "h_note": "Note", "no_history": "No status changes yet.",
        "cause_manager": "manager", "cause_decay": "days ran out", "cause_deal": "deal", "cause_import": "bulk load",
        "cause_revert": "reverted", "cause_new": "new client", "cause_index": "index",
        "import_title": "Load statuses from a file",
        "import_help": "CSV or XLSX: columns ID, Phone or Email (to find the client), Status (code or name), "
                       "Date (01.01.2000 or 01.01.2000 12:34:00), Type (contact/company).",
        "template_csv": "CSV template", "template_xlsx": "XLSX template",
        "import_file": "File", "import_default_type": "Default type", "import_upload": "Check the file",
        "import_preview": "File “{name}”: {total} rows, {valid} ready to load, {invalid} with errors.",
        "import_matching": "File “{name}”: {total} rows. Finding the portal's clients by phone and e-mail — "
                           "the preview opens by itself when that is done.",
        "import_errors": "Rows with errors", "row": "Row", "error": "Error",
        "import_apply": "Load {valid} statuses", "import_report": "Download the report",
        "import_done": "Load finished", "import_failed": "Could not read the file: {error}",
        "portal_blocked": "Bitrix24 has blocked this portal's REST API (OVERLOAD_LIMIT): Nezabyt makes no calls until Bitrix24 support lifts the block; next check at {until}.",
        "import_recent": "Recent loads", "import_state": "State", "import_loaded": "Loaded",
        "import_state_matching": "matching clients", "import_state_preview": "checked, not loaded",
        "import_state_queued": "queued", "import_state_running": "loading", "import_state_done": "loaded",
        "import_state_failed": "failed", "departed": "departed",
        "dash_title": "Managers at a glance",
        "dash_help": "How many clients each manager keeps and in what state.",
        "dash_changes": "Status changes by week", "decays": "Decays", "losses": "Lost", "transfers": "Transferred",
        "at_risk": "At risk this week", "at_risk_none": "Nobody changes status this week.",
        "total": "Total", "week_of": "week of",
        "card_title": "Client status", "card_untracked": "The client is not tracked (empty status).",
        "denied_title": "Access denied",
        "denied_no_token": "The page was opened without its access key. Open the app from Bitrix24 again.",
        "denied_expired": "This page has expired. Open the app from Bitrix24 again.",
        "denied_tampered": "The page's access key is damaged or forged.",
        "denied_no_auth": "Open the app from Bitrix24.",
        "denied_unknown_portal": "This portal has not installed the app.",
        "denied_bad_auth": "Bitrix24 did not confirm your sign-in. Open the app again.",
        "denied_not_admin": "Only a portal admin can change the settings.",
        "denied_portal": "This client belongs to another portal.",
        "warn_redate": "Dates not recomputed: {error}", "warn_sync": "The portal's status list not updated: {error}",
        "yes": "yes", "no": "no", "status_empty": "empty",
        "import_no_file": "No file chosen: pick a CSV or XLSX of statuses and press “Check the file”.",
    },
}

# addon.options speaks English; the admin reads Russian by default.
OPTION_ERRORS_RU = {
    "choose contacts, companies or both": "выберите контакты, компании или оба",
    "status codes must be unique": "коды статусов должны различаться",
    "system statuses cannot be moved": "системные статусы нельзя перемещать",
    "a status needs a name": "у статуса должно быть название",
    "a code is upper-case Latin letters, digits and _": "код — заглавные латинские буквы, цифры и _",
    "this code is reserved": "этот код занят",
    "days must be a whole number from 1 to 3650": "дней — целое число от 1 до 3650",
    "warning days must be at least 0 and fewer than the days": "дней предупреждения — от 0 и меньше срока",
    "only NEW, IN_WORK and LOST are system statuses": "системные только NEW, IN_WORK и LOST",
    "look-back days must be from 0 to 60": "от 0 до 60 дней",
    "warning days must be from 0 to 365": "от 0 до 365 дней",
    "time is HH:MM, e.g. 09:00": "время в виде ЧЧ:ММ, например 09:00",
    "unknown time zone (use a name like Europe/Moscow or an offset like +03:00)":
        "неизвестный часовой пояс (например Europe/Moscow или +03:00)",
    "choose none, a user, a pool or the supervisor": "выберите, кому передавать",
    "choose the user who receives lost clients": "выберите сотрудника, который получит пропавших клиентов",
    "the pool needs at least one user": "в списке должен быть хотя бы один сотрудник",
    "days must be from 1 to 30": "от 1 до 30 дней",
    "language is ru or en": "язык — ru или en",
    "unknown message": "неизвестное сообщение",
    "a whole number": "нужно целое число",
}


def translator(lang: str):
    texts = TEXTS.get(lang) or TEXTS["ru"]

    def t(key: str, **values) -> str:
        text = texts.get(key) or TEXTS["en"].get(key) or key
        return text.format(**values) if values else text

    return t


# Whole-file problems of a bulk load (addon.bulkload.files.BulkLoadError), in Russian.
LOAD_ERRORS_RU = [
    (re.compile(r"old \.xls files are not supported.*"), "старые файлы .xls не читаются: сохраните лист как .xlsx или .csv"),
    (re.compile(r"the file is neither UTF-8 nor Windows-1251 text"), "файл не в кодировке UTF-8 или Windows-1251"),
    (re.compile(r"the file is empty"), "файл пустой"),
    (re.compile(r"cannot read the spreadsheet: (.*)"), "таблицу не удалось прочитать: {0}"),
    (re.compile(r"the file needs a Status column.*"), "в файле нет колонки «Статус» (Status)"),
    (re.compile(r"the file needs an ID, Phone or Email column.*"),
     "в файле нет колонки «ID», «Телефон» или «E-mail», по которой искать клиента"),
    (re.compile(r"the file has a header but no rows"), "в файле есть заголовок, но нет ни одной строки"),
]


def load_error(lang: str, message: str) -> str:
    """A bulk load's whole-file error in the page's language (unknown ones as they are)."""
    return _translated(LOAD_ERRORS_RU, message) if lang == "ru" else message


def option_error(lang: str, message: str) -> str:
    if lang != "ru":
        return message
    if message in OPTION_ERRORS_RU:
        return OPTION_ERRORS_RU[message]
    if message.startswith("unknown placeholder or stray brace"):
        return "неизвестная подстановка или лишняя фигурная скобка" + message[len("unknown placeholder or stray brace"):]
    if message.startswith("the system status"):
        return "системный статус нельзя удалить"
    if message.endswith("does not decay"):
        return "этот статус не меняется по сроку"
    return message


# Row errors of a bulk load (addon.bulkload, worker.imports) are stored in English, the words of
# the result report; the Russian page shows them in Russian.
_ENTITY_RU = {"contact": "контакт", "company": "компания", "contacts": "контакты", "companys": "компании"}
_MATCH_RU = {"phone": "телефоном", "email": "e-mail", "id": "ID"}
ROW_ERRORS_RU = [
    (re.compile(r"unknown type «(.*)» \(contact or company\)"), "неизвестный тип «{0}» (контакт или компания)"),
    (re.compile(r"(contact|company) is not tracked in the settings"), "{0:entity} не отслеживается в настройках"),
    (re.compile(r"status is empty"), "не указан статус"),
    (re.compile(r"unknown status «(.*)»"), "неизвестный статус «{0}»"),
    (re.compile(r"date «(.*)» is not like .*"), "дата «{0}» не похожа на 01.01.2000 или 01.01.2000 12:34:00"),
    (re.compile(r"date (.*) is in the future"), "дата {0} ещё не наступила"),
    (re.compile(r"ID «(.*)» is not a number"), "ID «{0}» — не число"),
    (re.compile(r"phone «(.*)» is not a phone number"), "«{0}» — не номер телефона"),
    (re.compile(r"e-mail «(.*)» is not an address"), "«{0}» — не адрес e-mail"),
    (re.compile(r"no ID, phone or e-mail to find the client"), "нет ID, телефона или e-mail, чтобы найти клиента"),
    (re.compile(r"no (contact|company) with (phone|email|ID) (.*)"), "нет клиента ({0:entity}) с {1:match} {2}"),
    (re.compile(r"several (contact|company)s have (phone|email) (.*): IDs (.*)"),
     "{2} есть у нескольких клиентов ({0:entity}): ID {3}"),
    (re.compile(r"the same (contact|company) (\d+) is already in row (\d+)"),
     "этот клиент ({0:entity} {1}) уже есть в строке {2}"),
    (re.compile(r"the status field on the portal has no item for (.*): save the settings to re-sync it"),
     "в поле статуса на портале нет значения {0}: сохраните настройки, чтобы обновить список"),
    (re.compile(r"the client has an open deal: .*"), "у клиента открыта сделка: его статус «В работе», пока она не закрыта"),
]


def row_error(lang: str, message: str | None) -> str:
    """One row's error(s) ("; "-joined) in the page's language."""
    if not message or lang != "ru":
        return message or ""
    return "; ".join(_row_error_ru(part) for part in message.split("; "))


def _row_error_ru(part: str) -> str:
    return _translated(ROW_ERRORS_RU, part)


def _translated(patterns, part: str) -> str:
    """The first pattern that matches the whole English text, its Russian text filled in."""
    for pattern, text in patterns:
        match = pattern.fullmatch(part)
        if match:
            values = match.groups()
            return re.sub(r"\{(\d)(?::(\w+))?\}", lambda m: _word(values[int(m.group(1))], m.group(2)), text)
    return part


def _word(value: str, kind: str | None) -> str:
    if kind == "entity":
        return _ENTITY_RU.get(value, value)
    if kind == "match":
        return _MATCH_RU.get(value, value)
    return value


# An upload refused for its size (settings_ui.import_tab.upload_too_large), before it is read.
TEXTS["ru"].update({
    "import_failed_title": "Файл не загружен",
    "import_too_large": "Файл больше {limit} МБ — это больше, чем принимает одна загрузка. "
                        "Разделите его на несколько файлов и загрузите их по очереди.",
})
TEXTS["en"].update({
    "import_failed_title": "File not loaded",
    "import_too_large": "The file is over {limit} MB, more than one load takes. "
                        "Split it into several files and load them one by one.",
})

# The «Журнал» tab: the daily runs and bulk loads, their drill-down and their undo (addon.journal).
TEXTS["ru"].update({
    "tab_journal": "Журнал", "journal_title": "Журнал запусков и загрузок",
    "journal_help": "Каждый ежедневный запуск и каждая загрузка статусов — одна запись: сколько клиентов сменили "
                    "статус, сколько передано другим, сколько отправлено сообщений. Смены статусов и передачи "
                    "можно отменить в течение {days} дней: на портал вернутся прежний статус и ответственный — "
                    "кроме клиентов, которых с тех пор изменил менеджер (их список будет показан).",
    "journal_when": "Когда", "journal_what": "Что", "journal_changes": "Смен статуса",
    "journal_transfers": "Передано", "journal_messages": "Сообщений", "journal_undo": "Отмена",
    "journal_open": "Подробнее", "journal_empty": "Ежедневных запусков и загрузок статусов ещё не было.",
    "journal_daily": "Ежедневный запуск за {day}", "journal_import": "Загрузка статусов «{name}»",
    "journal_state_queued": "в очереди", "journal_state_running": "идёт", "journal_state_failed": "ошибка",
    "journal_summary": "смен статуса: {changes}, передано: {transfers}, сообщений: {messages}",
    "journal_by_manager": "По менеджерам", "journal_show_clients": "Клиенты",
    "journal_clients": "Клиенты", "journal_all_clients": "Все клиенты записи",
    "journal_status": "Статус: было → стало", "journal_assignee": "Ответственный: был → стал",
    "journal_first": "Показаны первые {shown} из {total}.", "journal_no_clients": "Клиентов нет.",
    "undo_until": "можно отменить до {until}", "undo_queued": "отмена в очереди…", "undo_running": "идёт отмена…",
    "undo_was": "отменено: возвращено {undone}, отказано {refused}, не удалось {failed}",
    "undo_was_at": "Отменено {at}: возвращено {undone}, отказано {refused}, не удалось {failed}.",
    "undo_nothing": "нечего отменять", "undo_not_finished": "запуск ещё не закончен",
    "undo_too_old": "прошло больше 7 дней",
    "undo_show_refused": "Кому отказано ({count})", "undo_show_failed": "Где не удалось ({count})",
    "undo_failed_before": "Прошлая попытка отмены прервалась ошибкой: её можно повторить, уже возвращённые "
                          "клиенты не будут затронуты.",
    "undo_button": "Отменить смены статусов и передачи",
    "undo_confirm": "Вернуть прежний статус ({changes}) и прежнего ответственного ({transfers}) на портале? "
                    "Клиентов, которых с тех пор изменил менеджер, это не коснётся. Если сроки статусов не "
                    "исправлены, вернувшиеся клиенты снова сменят статус при следующем запуске.",
    "undo_go": "Да, отменить", "undo_cancel": "Не отменять", "undo_progress_done": "Отмена выполнена",
    "undo_state_undone": "возвращён", "undo_state_refused": "отказано", "undo_state_failed": "не удалось",
    "undo_state_sending": "отправляется",
    "undo_why_status_changed": "статус с тех пор изменён",
    "undo_why_assignee_changed": "ответственный с тех пор изменён",
    "undo_why_gone": "клиент удалён на портале", "undo_why_untracked": "клиент больше не отслеживается",
    "undo_why_departed": "прежний ответственный уволен",
    "undo_why_status_removed": "прежнего статуса больше нет в настройках",
    "undo_refused_not_found": "Такой записи в журнале нет.",
    "undo_refused_not_finished": "Запуск ещё не закончен: отменить его можно, когда он завершится.",
    "undo_refused_too_old": "Отменить можно только в течение 7 дней после запуска.",
    "undo_refused_nothing": "В этой записи нет смен статусов и передач.",
    "undo_refused_done": "Эта запись уже отменена.",
    "cause_undo": "отмена",
})
TEXTS["en"].update({
    "tab_journal": "Journal", "journal_title": "Runs and loads",
    "journal_help": "Every daily run and every bulk load is one entry: how many clients changed status, how many "
                    "were handed over, how many messages went out. Status changes and hand-overs can be undone "
                    "within {days} days: the previous status and responsible go back to the portal, except for "
                    "clients a manager changed since (they are listed).",
    "journal_when": "When", "journal_what": "What", "journal_changes": "Status changes",
    "journal_transfers": "Handed over", "journal_messages": "Messages", "journal_undo": "Undo",
    "journal_open": "Details", "journal_empty": "No daily runs or bulk loads yet.",
    "journal_daily": "Daily run of {day}", "journal_import": "Bulk load “{name}”",
    "journal_state_queued": "queued", "journal_state_running": "running", "journal_state_failed": "failed",
    "journal_summary": "status changes: {changes}, handed over: {transfers}, messages: {messages}",
    "journal_by_manager": "By manager", "journal_show_clients": "Clients",
    "journal_clients": "Clients", "journal_all_clients": "All the entry's clients",
    "journal_status": "Status: before → after", "journal_assignee": "Responsible: before → after",
    "journal_first": "The first {shown} of {total}.", "journal_no_clients": "No clients.",
    "undo_until": "can be undone until {until}", "undo_queued": "undo queued…", "undo_running": "undoing…",
    "undo_was": "undone: {undone} returned, {refused} refused, {failed} failed",
    "undo_was_at": "Undone {at}: {undone} returned, {refused} refused, {failed} failed.",
    "undo_nothing": "nothing to undo", "undo_not_finished": "the run is not finished",
    "undo_too_old": "more than 7 days ago",
    "undo_show_refused": "Refused ({count})", "undo_show_failed": "Failed ({count})",
    "undo_failed_before": "The last undo stopped with an error: run it again; clients already returned are left alone.",
    "undo_button": "Undo the status changes and hand-overs",
    "undo_confirm": "Put the previous status ({changes}) and the previous responsible ({transfers}) back on the "
                    "portal? Clients a manager changed since are left alone. Unless the status limits were fixed, "
                    "the returned clients change status again at the next run.",
    "undo_go": "Yes, undo", "undo_cancel": "Do not undo", "undo_progress_done": "Undone",
    "undo_state_undone": "returned", "undo_state_refused": "refused", "undo_state_failed": "failed",
    "undo_state_sending": "sending",
    "undo_why_status_changed": "its status changed since",
    "undo_why_assignee_changed": "its responsible changed since",
    "undo_why_gone": "deleted on the portal", "undo_why_untracked": "no longer tracked",
    "undo_why_departed": "the previous responsible has left",
    "undo_why_status_removed": "the previous status is no longer in the settings",
    "undo_refused_not_found": "No such journal entry.",
    "undo_refused_not_finished": "The run is not finished yet: undo it once it is.",
    "undo_refused_too_old": "A run can be undone within 7 days only.",
    "undo_refused_nothing": "This entry changed no status and handed nobody over.",
    "undo_refused_done": "This entry is undone already.",
    "cause_undo": "undo",
})
