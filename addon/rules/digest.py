"""What each recipient is told for a day (DESIGN §1 "Notifications"): digest items from the day's
steps and warnings, rendered from the portal's templates in its language, merged into one message
per recipient per day or kept one per item. Pure: names and the day are passed in.

Message keys are the exactly-once keys of the notification log (and the TAG of the portal
notification), so the same inputs always give the same keys and the same texts.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from addon.options import DEFAULT_TEMPLATES, LOST, TEMPLATE_PLACEHOLDERS, Options, fill_template

from .ladder import Entity, Step, dates, next_status, should_warn
from .loss import LossPlan

DIGEST_KINDS = ("loss_supervisor", "loss", "transfer", "revert", "decay", "warning")
# The template each digest kind is written with (options.TEMPLATE_KINDS).
TEMPLATE_OF = {"warning": "warning", "decay": "decay", "loss": "loss_manager",
               "loss_supervisor": "loss_supervisor", "transfer": "transfer", "revert": "revert"}
ENTITY_PATHS = {"contact": "/crm/contact/details/{id}/", "company": "/crm/company/details/{id}/"}
NO_NAME = {"ru": {"contact": "Контакт №{id}", "company": "Компания №{id}"},
           "en": {"contact": "Contact #{id}", "company": "Company #{id}"}}
PROBLEM_TEXT = {
    "ru": {"no_call": "нет звонка клиенту за последние {days} {days_word}",
           "reason_required": "не указана причина",
           "unknown_status": "такого статуса нет в настройках"},
    "en": {"no_call": "no call to the client in the last {days} days",
           "reason_required": "a reason is required",
           "unknown_status": "this status is not in the settings"},
}


@dataclass(frozen=True, slots=True)  # a day's items are as many as its decays and warnings
class DigestItem:
    kind: str  # one of DIGEST_KINDS
    recipient_id: int
    entity_type: str  # contact | company
    entity_id: int
    title: str | None
    manager_id: int | None
    from_status: str | None = None
    to_status: str | None = None
    due_on: dt.date | None = None
    reason: str | None = None  # revert: a Verdict problem code or a free text


@dataclass(frozen=True)
class Message:
    recipient_id: int
    key: str  # the exactly-once key (notification log, notification TAG)
    kind: str  # "digest" when merged, else the item's kind
    text: str


def _lang(opts: Options) -> str:
    return opts.language if opts.language in NO_NAME else "en"


def format_date(opts: Options, day: dt.date | None) -> str:
    if day is None:
        return ""
    return day.strftime("%d.%m.%Y") if _lang(opts) == "ru" else day.isoformat()


def entity_link(opts: Options, item: DigestItem) -> str:
    """A BB-code link to the entity's card; brackets in the title would break the BB code."""
    title = (item.title or "").strip() or NO_NAME[_lang(opts)].get(
        item.entity_type, "#{id}").format(id=item.entity_id)
    title = title.replace("[", "(").replace("]", ")")
    return f"[URL={entity_url(item.entity_type, item.entity_id)}]{title}[/URL]"


def entity_url(entity_type: str, entity_id: int) -> str:
    return ENTITY_PATHS.get(entity_type, "/crm/{t}/details/{id}/").format(t=entity_type, id=entity_id)


def _reason_text(opts: Options, reason: str | None) -> str:
    if not reason:
        return ""
    known = PROBLEM_TEXT[_lang(opts)].get(reason)
    days = opts.call_lookback_days
    return known.format(days=days, days_word=_ru_days(days)) if known else reason


def _ru_days(n: int) -> str:
    """Russian plural of "day": 1 день, 3 дня, 5 дней, 11 дней, 21 день."""
    if n % 10 == 1 and n % 100 != 11:
        return "день"
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return "дня"
    return "дней"


def item_text(opts: Options, day: dt.date, item: DigestItem, user_names: dict[int, str]) -> str:
    """One item rendered from its template with every placeholder filled."""
    manager = ""
    if item.manager_id is not None:
        manager = user_names.get(item.manager_id) or f"#{item.manager_id}"
    values = {
        "entity": entity_link(opts, item),
        "status": opts.name_of(item.from_status),
        "next_status": opts.name_of(item.to_status),
        "from_status": opts.name_of(item.from_status),
        "to_status": opts.name_of(item.to_status),
        "due_date": format_date(opts, item.due_on),
        "manager": manager,
        "reason": _reason_text(opts, item.reason),
        "date": format_date(opts, day),
        "link": entity_url(item.entity_type, item.entity_id),
    }
    return _fill(opts, TEMPLATE_OF[item.kind], values)


def _fill(opts: Options, kind: str, values: dict[str, str]) -> str:
    """The admin's template filled in by plain substitution (options.fill_template: no attribute
    or index access); one that cannot be filled (saved before the settings check refused it, e.g.
    "{entity.name}") falls back to the default text rather than stop the run."""
    try:
        return fill_template(opts.template(kind), values)
    except ValueError:
        return fill_template(DEFAULT_TEMPLATES[_lang(opts)][kind], values)


def _blank_values(opts: Options, day: dt.date) -> dict[str, str]:
    return {p: "" for p in TEMPLATE_PLACEHOLDERS} | {"date": format_date(opts, day)}


def item_key(day: dt.date, item: DigestItem) -> str:
    return f"{item.kind}:{item.recipient_id}:{day.isoformat()}:{item.entity_type}:{item.entity_id}"


def _order(item: DigestItem) -> tuple:
    return (DIGEST_KINDS.index(item.kind), item.entity_type, item.entity_id)


def build_messages(opts: Options, day: dt.date, items: Iterable[DigestItem],
                   user_names: dict[int, str]) -> list[Message]:
    """The day's messages. Merged (opts.merge_notifications): ONE per recipient, the header
    then one line per item (losses first, warnings last). Else one message per item.
    Repeated identical items are sent once; the output order is deterministic."""
    unique: dict[tuple, DigestItem] = {}
    for item in items:
        if item.kind not in DIGEST_KINDS:
            raise ValueError(f"unknown digest item kind {item.kind!r}")
        unique.setdefault((item.kind, item.recipient_id, item.entity_type, item.entity_id), item)
    ordered = sorted(unique.values(), key=lambda i: (i.recipient_id, _order(i)))
    if not opts.merge_notifications:
        return [Message(i.recipient_id, item_key(day, i), i.kind, item_text(opts, day, i, user_names))
                for i in ordered]
    header = _fill(opts, "digest_header", _blank_values(opts, day))
    messages: list[Message] = []
    by_recipient: dict[int, list[DigestItem]] = {}
    for i in ordered:
        by_recipient.setdefault(i.recipient_id, []).append(i)
    for recipient, its in by_recipient.items():
        lines = [f"[B]{header}[/B]"] + [f"• {item_text(opts, day, i, user_names)}" for i in its]
        messages.append(Message(recipient, f"digest:{recipient}:{day.isoformat()}", "digest", "\n".join(lines)))
    return messages


# --- from the day's rules to digest items ------------------------------------------------------

def items_for_steps(opts: Options, steps: list[Step], *, entity_type: str, entity_id: int,
                    title: str | None, manager_id: int | None,
                    plan: LossPlan | None = None) -> list[DigestItem]:
    """The items a daily run's decay of one entity produces. Several steps in one catch-up are
    told as one change (first status → last); ending in LOST tells the manager and the
    supervisor per `plan`, and the new assignee of a transfer."""
    decays = [s for s in steps if s.cause == "decay"]
    if not decays:
        return []
    first, last = decays[0], decays[-1]
    common = dict(entity_type=entity_type, entity_id=entity_id, title=title, manager_id=manager_id,
                  from_status=first.from_status, to_status=last.to_status, due_on=last.on)
    items: list[DigestItem] = []
    if last.to_status != LOST:
        if manager_id is not None:
            items.append(DigestItem("decay", manager_id, **common))
        return items
    if plan is None or plan.notify_manager:
        if manager_id is not None:
            items.append(DigestItem("loss", manager_id, **common))
    if plan is not None and plan.supervisor_id is not None:
        items.append(DigestItem("loss_supervisor", plan.supervisor_id, **common))
    if plan is not None and plan.new_assignee is not None:
        items.append(DigestItem("transfer", plan.new_assignee, **common))
    return items


def warning_item(opts: Options, e: Entity, day: dt.date, *, entity_type: str, entity_id: int,
                 title: str | None, manager_id: int | None,
                 last_run_on: dt.date | None = None) -> DigestItem | None:
    """A warning for the manager when the run of `day` must warn (see `should_warn`)."""
    if manager_id is None or not should_warn(opts, e, day, last_run_on):
        return None
    due, _ = dates(opts, e)
    return DigestItem("warning", manager_id, entity_type, entity_id, title, manager_id,
                      from_status=e.status, to_status=next_status(opts, e.status), due_on=due)


def revert_item(opts: Options, *, entity_type: str, entity_id: int, title: str | None,
                manager_id: int, rejected_status: str | None, restored_status: str | None,
                problem: str | None) -> DigestItem:
    """The immediate warning to a manager whose change was reverted."""
    return DigestItem("revert", manager_id, entity_type, entity_id, title, manager_id,
                      from_status=rejected_status, to_status=restored_status, reason=problem)


# --- the entity's timeline, the live feed, the settings preview --------------------------------

# Each comment names the day of its change: a catch-up after missed runs tells each step on its own
# day, and a comment's text is unique on its entity, which lets an interrupted send be confirmed
# against the portal (outbox._confirm_interrupted) instead of posted twice.
TIMELINE_TEXT = {
    "ru": {"decay": "Не забыт, {day}: статус сменился с «{a}» на «{b}».",
           "manager": "Не забыт, {day}: менеджер сменил статус с «{a}» на «{b}».",
           "revert": "Не забыт, {day}: статус возвращён на «{b}».",
           "deal": "Не забыт, {day}: по сделке статус сменился с «{a}» на «{b}».",
           "undo": "Не забыт, {day}: смена статуса отменена, статус снова «{b}».",
           "other": "Не забыт, {day}: статус «{b}»."},
    "en": {"decay": "Nezabyt, {day}: status changed from “{a}” to “{b}”.",
           "manager": "Nezabyt, {day}: the manager changed the status from “{a}” to “{b}”.",
           "revert": "Nezabyt, {day}: status reverted to “{b}”.",
           "deal": "Nezabyt, {day}: a deal changed the status from “{a}” to “{b}”.",
           "undo": "Nezabyt, {day}: the status change was undone, the status is “{b}” again.",
           "other": "Nezabyt, {day}: status “{b}”."},
}


def timeline_text(opts: Options, step: Step) -> str | None:
    """The timeline comment on the entity for one recorded change, or None when it is no change
    to comment on (the status stayed, or indexing only read what the portal already shows)."""
    if step.to_status == step.from_status or step.cause == "index":
        return None
    texts = TIMELINE_TEXT.get(opts.language, TIMELINE_TEXT["en"])
    return texts.get(step.cause, texts["other"]).format(a=opts.name_of(step.from_status),
                                                        b=opts.name_of(step.to_status),
                                                        day=format_date(opts, step.on))


def feed_item(opts: Options, *, entity_type: str, entity_id: int, title: str | None, manager_id: int,
              status: str | None, due_on: dt.date | None) -> DigestItem:
    """One line of a manager's live-feed post: the client, its status, the next one and when."""
    return DigestItem("warning", manager_id, entity_type, entity_id, title, manager_id,
                      from_status=status, to_status=next_status(opts, status), due_on=due_on)


def feed_text(opts: Options, day: dt.date, items: Iterable[DigestItem]) -> str:
    """The live-feed post's text for one manager: a line per client that changes status soon, in
    the order given (each written with the warning template)."""
    return "\n".join("• " + item_text(opts, day, item, {}) for item in items)


def feed_title(opts: Options, day: dt.date) -> str:
    """The live-feed post's title for `day`, from its template."""
    return _fill(opts, "feed_title", _blank_values(opts, day))


def template_preview(opts: Options, day: dt.date) -> dict[str, str]:
    """Every message kind rendered for a sample client, for the settings page's live preview."""
    sample_names = {1: "Анна Смирнова" if _lang(opts) == "ru" else "Anna Smith"}
    chain = opts.custom_chain
    top = chain[0] if chain else "NEW"
    samples = {
        "warning": DigestItem("warning", 1, "contact", 1, None, 1, top, opts.next_status(top),
                              day + dt.timedelta(days=opts.default_warn_days)),
        "decay": DigestItem("decay", 1, "contact", 1, None, 1, top, opts.next_status(top), day),
        "loss": DigestItem("loss", 1, "contact", 1, None, 1, opts.next_status(top), LOST, day),
        "loss_supervisor": DigestItem("loss_supervisor", 2, "contact", 1, None, 1, None, LOST, day),
        "transfer": DigestItem("transfer", 3, "contact", 1, None, 1, None, LOST, day),
        "revert": DigestItem("revert", 1, "contact", 1, None, 1, LOST, top, day, reason="no_call"),
    }
    preview = {TEMPLATE_OF[k]: item_text(opts, day, item, sample_names) for k, item in samples.items()}
    preview["digest_header"] = _fill(opts, "digest_header", _blank_values(opts, day))
    return preview
