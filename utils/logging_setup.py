"""One logging configuration for the whole process: stdout, text or JSON lines, secrets redacted, libraries quiet."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

# Context fields a log call may pass with `extra=` and the JSON format then carries as keys.
CONTEXT_FIELDS = ("sid", "channel", "event", "namespace", "transport", "reason")

_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"(?i)((?:token|api_key|apikey|password|secret|session)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;}]+"),
)


def redact(text: str) -> str:
    """Mask anything shaped like a credential."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, and the trace when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text", library_level: str = "WARNING") -> None:
    """Route every logger to stdout in the chosen format; idempotent, so repeated app factories don't stack handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_signalboard", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler._signalboard = True  # type: ignore[attr-defined]
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # The libraries log every packet at INFO; they get their own, quieter level (their own loggers, so they can
    # still be turned up for debugging).
    for name in ("engineio", "socketio", "engineio.server", "socketio.server"):
        logging.getLogger(name).setLevel(library_level)
    if fmt == "json":
        _route_gunicorn_through(handler)


def _route_gunicorn_through(handler: logging.Handler) -> None:
    """In JSON mode gunicorn's own error log uses the same formatter, so every line parses."""
    for name in ("gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        for existing in logger.handlers:
            existing.setFormatter(handler.formatter)
