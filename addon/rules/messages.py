"""How long a message Nezabyt may send, and fitting a longer one: split on line boundaries into
numbered parts «(1/3)», or cut with a «…и ещё N» tail where one message must stay one. Pure.

The Bitrix24 REST docs give no length limit for the texts we send: im.notify.system.add (MESSAGE,
api-reference/chats/notifications/im-notify-system-add.md; only ATTACH has one, 60,000 characters),
crm.timeline.comment.add (COMMENT, api-reference/crm/timeline/comments/crm-timeline-comment-add.md)
and log.blogpost.add (POST_MESSAGE, api-reference/log/log-blogpost-add.md) leave it open. We keep
every text within 20,000 characters: a third of the one limit the docs do name, and even in two-byte
Cyrillic well inside a 64 KB text column, while a merged digest may otherwise reach ~257k.
"""
from __future__ import annotations

MESSAGE_LIMIT = 20_000  # im.notify.system.add MESSAGE
COMMENT_LIMIT = 20_000  # crm.timeline.comment.add COMMENT
POST_LIMIT = 20_000  # log.blogpost.add POST_MESSAGE

ELLIPSIS = "…"
MORE_TEXT = {"ru": "…и ещё {n}", "en": "…and {n} more"}
# A head line (the digest's header) longer than this share of the limit is cut, so every part has
# room for the lines it carries.
_HEAD_SHARE = 4


def cut_line(line: str, limit: int) -> str:
    """The line itself if it fits, else its start and «…» in exactly `limit` characters."""
    if len(line) <= limit:
        return line
    return line[:max(limit - len(ELLIPSIS), 0)] + ELLIPSIS


def part_mark(k: int, n: int) -> str:
    return f"({k}/{n})"


def split_message(text: str, limit: int, *, head: bool = True) -> list[str]:
    """The text as parts of at most `limit` characters each, split between lines; a text that fits
    is the one part, unchanged. With `head`, the first line (the digest's header) opens every part
    followed by its number «(k/n)»; without, the number is the part's first line. A single line
    longer than a part's room is cut with «…». Joining the parts' lines without their head and
    number gives back every line of the text, in order."""
    if len(text) <= limit:
        return [text]
    lines = text.split("\n")
    if len(lines) == 1:
        return [cut_line(text, limit)]
    head_line = cut_line(lines.pop(0), limit // _HEAD_SHARE) if head else None
    digits = 1
    while True:
        widest = part_mark(10 ** digits - 1, 10 ** digits - 1)
        prefix = len(f"{head_line} {widest}\n") if head_line is not None else len(f"{widest}\n")
        room = limit - prefix
        if room < 1:
            raise ValueError(f"a limit of {limit} characters leaves no room for a part's lines")
        bodies = _pack([cut_line(ln, room) for ln in lines], room)
        if len(str(len(bodies))) <= digits:
            break
        digits += 1
    n = len(bodies)
    if head_line is not None:
        return [f"{head_line} {part_mark(k, n)}\n{body}" for k, body in enumerate(bodies, 1)]
    return [f"{part_mark(k, n)}\n{body}" for k, body in enumerate(bodies, 1)]


def _pack(lines: list[str], room: int) -> list[str]:
    """Greedy: as many whole lines in a part as fit in `room` (each line already fits alone)."""
    bodies: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        extra = len(line) + (1 if current else 0)
        if current and size + extra > room:
            bodies.append("\n".join(current))
            current, size = [], 0
            extra = len(line)
        current.append(line)
        size += extra
    if current or not bodies:
        bodies.append("\n".join(current))
    return bodies


def cut_message(text: str, limit: int, language: str = "ru") -> str:
    """The text within `limit` characters as one message: the whole lines that fit, then «…и ещё N»
    for the N lines left out; a single line too long is cut with «…»."""
    if len(text) <= limit:
        return text
    lines = text.split("\n")
    more = MORE_TEXT.get(language, MORE_TEXT["en"])
    kept: list[str] = []
    size = 0
    for i, line in enumerate(lines):
        tail = "\n" + more.format(n=len(lines) - i)
        extra = len(line) + (1 if kept else 0)
        if size + extra + len(tail) > limit:
            if not kept:
                return cut_line(text.replace("\n", " "), limit)
            return "\n".join(kept) + tail
        kept.append(line)
        size += extra
    return "\n".join(kept)  # not reached: the whole text did not fit
