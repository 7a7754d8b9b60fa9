"""Logging setup shared by the web app and the worker: plain text lines by default, one JSON
object a line with LOG_FORMAT=json (for a log collector), with a record's `extra` fields kept."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log a line per request or per job run: kept to warnings.
QUIET_LOGGERS = ("fast_bitrix24", "apscheduler.executors.default")
# What every LogRecord has: the rest of its attributes came from `extra=` and go into the JSON.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the record's extra
    fields, and the traceback as `exc_info` text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def make_handler(env: dict[str, str] | None = None, stream=None) -> logging.Handler:
    env = os.environ if env is None else env
    handler = logging.StreamHandler(stream or sys.stderr)
    json_lines = env.get("LOG_FORMAT", "").strip().lower() == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(env: dict[str, str] | None = None, stream=None, level: int = logging.INFO) -> None:
    """Give the root logger our handler, unless the process already set up logging (a test
    runner, an embedding program): then its choice stands and only the levels are set."""
    env = os.environ if env is None else env
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(make_handler(env, stream))
    name = env.get("LOG_LEVEL", "").strip().upper()
    root.setLevel(logging.getLevelName(name) if name in ("DEBUG", "INFO", "WARNING", "ERROR") else level)
    for quiet in QUIET_LOGGERS:
        logging.getLogger(quiet).setLevel(logging.WARNING)
