"""Logs: one line per event batch and per daily run with the portal, the counts and the duration;
one JSON object a line with LOG_FORMAT=json, in the web app and the worker alike."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys

from sqlalchemy import select

from addon.logs import JsonFormatter
from addon.models import Portal


def _record(msg="hello %s", args=("world",), **extra) -> logging.LogRecord:
    record = logging.LogRecord("worker.events", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_the_json_formatter_keeps_the_message_the_extra_fields_and_the_traceback():
    line = json.loads(JsonFormatter().format(_record(portal_id=7, day=dt.date(2026, 12, 1), transitions={"a": 1})))
    assert line["message"] == "hello world" and line["level"] == "INFO" and line["logger"] == "worker.events"
    assert (line["portal_id"], line["day"], line["transitions"]) == (7, "2026-12-01", {"a": 1})
    assert line["time"].endswith("+00:00")
    assert "args" not in line and "msg" not in line
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: boom" in line["exc_info"]


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NEZABYT_SECRET_KEY": "logs-test-secret-key-0123456789abcdef", **env})


def test_log_format_json_gives_json_lines_and_plain_text_by_default(tmp_path):
    db = f"sqlite:///{tmp_path / 'logs.sqlite3'}"
    web = _run("import logging; from addon.web import create_app; create_app(); "
               "logging.getLogger('addon.web').info('started', extra={'portal_id': 3})",
               LOG_FORMAT="json", DATABASE_URL=db)
    assert web.returncode == 0, web.stderr
    line = json.loads(web.stderr.strip().splitlines()[-1])
    assert (line["message"], line["portal_id"], line["logger"]) == ("started", 3, "addon.web")
    plain = _run("import logging; from addon.logs import configure_logging; configure_logging(); "
                 "logging.getLogger('worker.daily').info('daily run: done')", DATABASE_URL=db)
    assert plain.stderr.strip().endswith("INFO worker.daily: daily run: done")
    # The worker's own process (`nezabyt worker`) is seen logging JSON in tests/deploy/test_guide.py.


def test_one_line_per_event_batch_and_per_daily_run(healthy, caplog):
    from worker.daily import run_daily
    from worker.events import process_events

    with healthy.sessions() as s:
        portal_id = s.scalars(select(Portal.id)).one()
    now = dt.datetime.now(dt.timezone.utc)
    with caplog.at_level(logging.INFO):
        process_events(healthy, portal_id, now)
        run_daily(healthy, portal_id, now)
    batches = [r for r in caplog.records if getattr(r, "job", None) == "events"]
    daily = [r for r in caplog.records if getattr(r, "job", None) == "daily"]
    assert len(batches) == 1 and len(daily) == 1
    batch = json.loads(JsonFormatter().format(batches[0]))
    assert (batch["portal_id"], batch["events"], batch["processed"], batch["failed"]) == (portal_id, 1, 1, 0)
    assert batch["rest_calls"] >= 1 and batch["seconds"] >= 0
    assert batch["message"].startswith(f"event batch: portal {portal_id}, 1 events, 1 processed")
    run = json.loads(JsonFormatter().format(daily[0]))
    assert run["portal_id"] == portal_id and run["day"] == now.astimezone(dt.timezone(dt.timedelta(hours=3))).date().isoformat()
    assert {"decayed", "losses", "messages_sent", "left_to_send", "seconds"} <= set(run)
    assert run["message"].startswith(f"daily run: portal {portal_id}, day ")
