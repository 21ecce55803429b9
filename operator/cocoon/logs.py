"""Structured logs: one JSON object per line, carrying only the fields the code passes.

Every process (operator, agent, meter) logs this way, so any collector can query by field.
Fields come from `extra={...}` (or `extra={"fields": {...}}`). Never pass request or response
content, keys or credentials: the code logs identifiers, counts and reasons only.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
    "taskName",
    # kopf's per-object loggers attach the whole OperatorSettings (~3 KB) and a skip flag
    "settings",
    "k8s_skip",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        nested = extra.pop("fields", None)
        entry.update(extra)
        if isinstance(nested, dict):
            entry.update(nested)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: int | str = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
