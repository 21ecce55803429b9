"""Structured logs: one JSON object per line, carrying only the fields the code passes.

Every process (operator, agent, meter) logs this way, so any collector can query by field.
Fields come from `extra={...}` (or `extra={"fields": {...}}`). Never pass request or response
content, keys or credentials: the code logs identifiers, counts and reasons only.

Two guards catch what libraries log on their own: an exception raised inside an HTTP or
protocol library (aiohttp's parser quotes the raw bytes it rejected in its messages) is logged
as its type only, and anything that looks like a credential (`Bearer ...`, `Authorization:
...`) is redacted from every line.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}


# Loggers of libraries whose exception messages may quote bytes received from a peer.
_QUOTING_LIBRARIES = ("aiohttp", "asyncio", "grpc", "kopf", "kubernetes_asyncio", "urllib3")
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',;}]+")
_AUTHORIZATION = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?!(?:bearer|basic)\s)[^\s\"',;}]+"
)


def redact(text: str) -> str:
    """`text` with credential-looking values (Bearer/Basic tokens, Authorization:) replaced."""
    return _AUTHORIZATION.sub(r"\1<redacted>", _SCHEME_TOKEN.sub(r"\1\2<redacted>", text))


def _quoting_library(record: logging.LogRecord) -> bool:
    return record.name.split(".", 1)[0] in _QUOTING_LIBRARIES


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
        if record.exc_info and record.exc_info[1] is not None and _quoting_library(record):
            entry["exception"] = type(record.exc_info[1]).__name__
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def configure(level: int | str = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
