"""A manager with many clients gets the day's digest and live-feed post in numbered parts, each
within what the portal takes (rules.messages), every client told once, none lost, none twice —
also when the run is killed between planning and sending and run again."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from addon import notifications, outbox
from addon.bitrix.client import portal_client
from addon.models import NotificationLog
from addon.rules.messages import COMMENT_LIMIT, MESSAGE_LIMIT, POST_LIMIT
from devportal.methods.common import TEXT_LIMIT
from tests.worker.conftest import DAY0, at

DECAYING = range(1, 401)  # HOT set 31 days ago: decay to WARM on the run's day
SOON = range(401, 801)  # HOT set 28 days ago: change within feed_post_days, listed in the feed post
LINK = re.compile(r"/crm/contact/details/(\d+)/")


def _one_manager_with_many_clients(h) -> int:
    h.dp.seed(departments=1, managers=2, contacts=len(DECAYING) + len(SOON), companies=0, months_of_calls=0,
              deals=0, rng_seed=7)
    manager = int(h.dp.records["contact"][1]["ASSIGNED_BY_ID"])
    for record in h.dp.records["contact"].values():
        record["ASSIGNED_BY_ID"] = str(manager)
    h.install(feed_post=True, feed_post_days=3, timeline_comments=True)
    for cid in DECAYING:
        h.put_status("contact", cid, "HOT", at(DAY0 - dt.timedelta(days=31), 10))
    for cid in SOON:
        h.put_status("contact", cid, "HOT", at(DAY0 - dt.timedelta(days=28), 10))
    h.reindex(at(DAY0, 8))
    return manager


def _parts_in_order(texts: list[str]) -> list[str]:
    """The parts sorted by their number «(k/n)», checking that they are 1..n with one n."""
    numbered = []
    for text in texts:
        k, n = map(int, re.search(r"\((\d+)/(\d+)\)", text.split("\n")[0]).groups())
        numbered.append((k, n, text))
    numbered.sort()
    assert [k for k, _, _ in numbered] == list(range(1, len(texts) + 1))
    assert {n for _, n, _ in numbered} == {len(texts)}
    return [text for _, _, text in numbered]


def _check_delivered(h, manager: int) -> None:
    assert MESSAGE_LIMIT <= TEXT_LIMIT and POST_LIMIT <= TEXT_LIMIT
    digest = _parts_in_order([n["message"] for n in h.dp.notifications if n["user_id"] == manager])
    assert len(digest) >= 2
    assert all(len(part) <= MESSAGE_LIMIT for part in digest)
    assert all(part.startswith("[B]") for part in digest)  # the header opens every part
    told = [int(i) for part in digest for i in LINK.findall(part)]
    assert sorted(i for i in told if i in DECAYING) == list(DECAYING)  # each decayed client once
    # Each part is its own notification under its own TAG: none replaced another.
    assert len({n["tag"] for n in h.dp.notifications}) == len(h.dp.notifications)

    posts = _parts_in_order([p["message"] for p in h.dp.blog_posts if p["dest"] == [f"U{manager}"]])
    assert len(posts) >= 2
    assert all(len(post) <= POST_LIMIT for post in posts)
    assert sorted(int(i) for post in posts for i in LINK.findall(post)) == list(SOON)

    comments = h.dp.timeline_comments
    assert sorted(c["ENTITY_ID"] for c in comments) == list(DECAYING)
    with h.services.sessions() as s:
        rows = s.scalars(select(NotificationLog).where(NotificationLog.portal_id == h.portal_id)).all()
        assert {r.status for r in rows} == {"sent"}
        keys = {r.key for r in rows if r.kind == "digest"}
        base = f"digest:{manager}:{DAY0.isoformat()}"
        assert keys == {base} | {f"{base}:{k}" for k in range(2, len(digest) + 1)}


def test_a_long_digest_and_feed_post_arrive_in_parts_all_delivered(harness):
    h = harness
    manager = _one_manager_with_many_clients(h)
    summary = h.daily(at(DAY0, 9))
    assert summary.decayed == len(DECAYING)
    _check_delivered(h, manager)
    # The same day again sends nothing.
    sent = (len(h.dp.notifications), len(h.dp.blog_posts))
    assert h.daily(at(DAY0, 10)).already_done
    assert (len(h.dp.notifications), len(h.dp.blog_posts)) == sent


def test_a_run_killed_while_sending_the_parts_sends_the_rest_once(harness, monkeypatch):
    h = harness
    manager = _one_manager_with_many_clients(h)
    real = notifications.notification_command
    calls = {"n": 0}

    def dying(row, title=None):
        # The worker dies after the first batch of messages went out and was marked.
        calls["n"] += 1
        if calls["n"] == 2:
            raise SystemExit("killed")
        return real(row, title)

    monkeypatch.setattr(outbox, "SEND_CHUNK", 1)
    monkeypatch.setattr(notifications, "notification_command", dying)
    with pytest.raises(SystemExit):
        h.daily(at(DAY0, 9))
    assert len(h.dp.notifications) + len(h.dp.blog_posts) == 1
    monkeypatch.setattr(notifications, "notification_command", real)
    monkeypatch.setattr(outbox, "SEND_CHUNK", 50)
    h.daily(at(DAY0, 9, 30))
    _check_delivered(h, manager)


def test_an_over_long_timeline_comment_and_message_are_kept_within_the_limit(harness):
    h = harness
    h.dp.seed(departments=1, managers=2, contacts=3, companies=0, months_of_calls=0, deals=0, rng_seed=3)
    h.install()
    manager = int(h.dp.records["contact"][1]["ASSIGNED_BY_ID"])
    with h.services.sessions() as s:
        long_comment = "Не забыт: " + "я" * 30_000
        outbox.plan_write(s, h.portal_id, "timeline:long", "crm.timeline.comment.add",
                          {"fields": {"ENTITY_ID": 1, "ENTITY_TYPE": "contact", "COMMENT": long_comment}})
        # One line (a revert warning, a robot's message): cut, as it cannot be split between lines.
        notifications.plan_message(s, h.portal_id, "revert:contact:1:1", manager, DAY0, "revert", "я" * 30_000)
        s.commit()
    client = portal_client(h.services, h.portal_id)
    try:
        assert notifications.flush(h.services, client, h.portal_id) == (1, 1)
    finally:
        client.close()
    [comment] = h.dp.timeline_comments
    assert len(comment["COMMENT"]) == COMMENT_LIMIT and comment["COMMENT"].endswith("…")
    [note] = h.dp.notifications
    assert len(note["message"]) == MESSAGE_LIMIT and note["message"].endswith("…")
