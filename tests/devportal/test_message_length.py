"""The devportal refuses a notification, a timeline comment or a live-feed post too long for a portal."""
from __future__ import annotations

from devportal.methods.common import TEXT_LIMIT
from tests.devportal.conftest import rest


# doc: api-reference/chats/notifications/im-notify-system-add.md ; im-notify-personal-add.md ; im-notify.md
# (no MESSAGE limit given: the devportal's own, devportal.methods.common.TEXT_LIMIT)
def test_an_over_long_notification_is_refused(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    fits = rest(srv, "im.notify.system.add", token, USER_ID=2, MESSAGE="я" * TEXT_LIMIT, TAG="digest|2")
    assert isinstance(fits.json()["result"], int)
    for method in ("im.notify.system.add", "im.notify.personal.add", "im.notify"):
        refused = rest(srv, method, token, USER_ID=2, MESSAGE="я" * (TEXT_LIMIT + 1), TAG=f"{method}|2")
        assert refused.status_code == 400, method
        assert refused.json()["error"] == "ERROR_ARGUMENT"
    assert [len(n["message"]) for n in srv.portal.notifications] == [TEXT_LIMIT]


# doc: api-reference/crm/timeline/comments/crm-timeline-comment-add.md
def test_an_over_long_timeline_comment_is_refused(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    cid = srv.portal.act_add("contact", {"NAME": "Т"})
    refused = rest(srv, "crm.timeline.comment.add", token,
                   fields={"ENTITY_ID": cid, "ENTITY_TYPE": "contact", "COMMENT": "x" * (TEXT_LIMIT + 1)})
    assert refused.status_code == 400 and refused.json()["error"] == "ERROR_ARGUMENT"
    fits = rest(srv, "crm.timeline.comment.add", token,
                fields={"ENTITY_ID": cid, "ENTITY_TYPE": "contact", "COMMENT": "x" * TEXT_LIMIT})
    assert isinstance(fits.json()["result"], int)
    assert [len(c["COMMENT"]) for c in srv.portal.timeline_comments] == [TEXT_LIMIT]


# doc: api-reference/log/log-blogpost-add.md (the documented "not added" error)
def test_an_over_long_feed_post_is_refused(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    refused = rest(srv, "log.blogpost.add", token, POST_MESSAGE="x" * (TEXT_LIMIT + 1), DEST=["U2"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "SONET_CONTROLLER_LIVEFEED_BLOGPOST_ADD_ERROR"
    assert srv.portal.blog_posts == []
    assert isinstance(rest(srv, "log.blogpost.add", token, POST_MESSAGE="x" * TEXT_LIMIT,
                           DEST=["U2"]).json()["result"], int)
