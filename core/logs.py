"""Logs that say which call and which work order they are about (结构化日志).

The adapters bind the ids they handle (the telephony service per AMI event, the IVR per
session, the web per request naming one) in context variables; `CallContext`, a logging
filter, copies them onto every record, so a line logged deep in a room carries the call id
(`call_id`) and the case number (`case_number`) without each call site passing them.
`hotline.log_format = "json"` writes one JSON object a line for a log collector; "text"
appends ` call=… case=…` when they are known."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

CALL_ID: ContextVar[str] = ContextVar("call_id", default="")
CASE_NUMBER: ContextVar[str] = ContextVar("case_number", default="")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(ids)s"


class CallContext(logging.Filter):
    """Puts the bound call id and case number on every record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.call_id = getattr(record, "call_id", "") or CALL_ID.get()
        record.case_number = getattr(record, "case_number", "") or CASE_NUMBER.get()
        ids = []
        if record.call_id:
            ids.append(f"call={record.call_id}")
        if record.case_number:
            ids.append(f"case={record.case_number}")
        record.ids = (" " + " ".join(ids)) if ids else ""
        return True


class JsonLines(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the ids, and
    the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(
                    timespec="milliseconds"),
                "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        for key in ("call_id", "case_number"):
            if getattr(record, key, ""):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: int, log_format: str = "text") -> None:
    """The process's root logging: to stderr, text or JSON lines, ids on every record."""
    handler = logging.StreamHandler()
    handler.addFilter(CallContext())
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if not isinstance(old, FailureCounter):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if not any(isinstance(h, FailureCounter) for h in root.handlers):
        root.addHandler(FailureCounter())


class FailureCounter(logging.Handler):
    """Counts every failure logged with its traceback (a worker's job, an AGI route, an AMI
    handler), by logger: the `hotline_worker_failures_total` metric."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            from core.metrics import WORKER_FAILURES

            WORKER_FAILURES.labels(worker=record.name).inc()
