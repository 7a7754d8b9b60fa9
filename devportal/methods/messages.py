"""REST methods that tell people things: notifications (im.notify.*), feed posts
(log.blogpost.add) and tasks (tasks.task.add)."""
from __future__ import annotations

from devportal.errors import RestError, argument_error
from devportal.methods.common import TEXT_LIMIT, arg, as_dict, registrar, text_too_long
from devportal.phpquery import as_list

METHODS: dict = {}
method = registrar(METHODS)


def _notify(portal, ctx, params, kind):
    user_id = arg(params, "USER_ID")
    message = arg(params, "MESSAGE")
    if not user_id:
        raise RestError("USER_ID_EMPTY", "Recipient user ID not specified", 400)
    if not message:
        raise RestError("MESSAGE_EMPTY", "Message text not specified", 400)
    if text_too_long(message):
        raise argument_error(f"Message is longer than {TEXT_LIMIT} characters", "MESSAGE")
    tag = arg(params, "TAG")
    if tag:
        full = portal.md5_tag(tag)
        portal.notifications[:] = [n for n in portal.notifications if n.get("tag") != full]
    nid = portal._next("notification")
    portal.notifications.append({"id": nid, "kind": kind, "user_id": int(user_id), "message": message,
                                 "message_out": arg(params, "MESSAGE_OUT"), "tag": portal.md5_tag(tag) if tag else None,
                                 "sub_tag": arg(params, "SUB_TAG"), "from_user_id": 0 if kind == "system" else ctx.user_id,
                                 "time": portal.iso()})
    return nid


@method("im.notify.system.add")
def notify_system(portal, ctx, params):
    return _notify(portal, ctx, params, "system")


@method("im.notify.personal.add")
def notify_personal(portal, ctx, params):
    return _notify(portal, ctx, params, "personal")


@method("im.notify")
def notify_legacy(portal, ctx, params):
    kind = "personal" if str(arg(params, "TYPE") or "").upper() == "USER" else "system"
    return _notify(portal, ctx, params, kind)


@method("log.blogpost.add")
def blogpost_add(portal, ctx, params):
    message = arg(params, "POST_MESSAGE")
    if not message:
        raise argument_error("Empty post message", "POST_MESSAGE")
    if text_too_long(message):
        # The docs' general "not added" error of log.blogpost.add (log-blogpost-add.md).
        raise RestError("SONET_CONTROLLER_LIVEFEED_BLOGPOST_ADD_ERROR", "Blog post hasn't been added", 400)
    pid = portal._next("blogpost")
    author = arg(params, "USER_ID") if portal.is_admin(ctx.user_id) and arg(params, "USER_ID") else ctx.user_id
    portal.blog_posts.append({"id": pid, "title": arg(params, "POST_TITLE") or "", "message": message,
                              "dest": as_list(arg(params, "DEST")) or ["UA"], "important": arg(params, "IMPORTANT"),
                              "author_id": int(author), "time": portal.iso()})
    return pid


@method("tasks.task.add")
def task_add(portal, ctx, params):
    fields = as_dict(arg(params, "fields"))
    upper = {str(k).upper(): v for k, v in fields.items()}
    if not upper.get("TITLE"):
        raise RestError("ERROR_CORE", "Не указано название задачи", 400)
    if not upper.get("RESPONSIBLE_ID"):
        raise RestError("ERROR_CORE", "Не указан ответственный", 400)
    tid = portal._next("task")
    task = {"id": str(tid), "title": upper["TITLE"], "description": upper.get("DESCRIPTION", ""),
            "responsibleId": str(upper["RESPONSIBLE_ID"]), "createdBy": str(upper.get("CREATED_BY") or ctx.user_id),
            "deadline": upper.get("DEADLINE"), "createdDate": portal.iso(), "status": "2",
            "ufCrmTask": [str(v) for v in as_list(upper.get("UF_CRM_TASK"))], "groupId": str(upper.get("GROUP_ID") or 0)}
    portal.tasks.append(task)
    return {"task": task}
