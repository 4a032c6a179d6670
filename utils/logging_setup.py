"""One logging configuration for the whole process: stdout, text or JSON lines, secrets redacted, libraries quiet."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import click

# Context fields a log call may pass with `extra=` and the JSON format then carries as keys.
CONTEXT_FIELDS = ("sid", "channel", "event", "namespace", "transport", "reason")

_SECRET_PATTERNS = (
    re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # JWTs
    # Whole header values, as `Name: value` lines or in a dict's repr.
    re.compile(r"(?i)(\b(?:http_)?(?:(?:proxy[-_])?authorization|(?:set[-_])?cookie|x[-_]api[-_]key))"
               r"([\"']?\s*[=:]\s*[\"']?)[^\"'\r\n]+"),
    # key=value and "key": "value" shapes: query strings, form bodies, JSON, reprs.
    re.compile(r"(?i)(\b[a-z_]*(?:token|api[_-]?key|apikey|password|passwd|secret)[\"']?\s*[=:]\s*[\"']?)"
               r"[^\s\"'&,;}]+"),
)
# Configured secrets (API keys, SECRET_KEY, METRICS_TOKEN...) are masked wherever they appear, as written or
# URL-encoded (a key in a query string or form body). Shorter values are masked only as whole words: anywhere, they
# would mask pieces of ordinary words.
_MIN_LITERAL_LENGTH = 6
_literal_secrets: tuple[str, ...] = ()
_short_secrets: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str]) -> None:
    """Mask these exact values in every log line from now on (replaces the previous set)."""
    global _literal_secrets, _short_secrets
    forms = {form for value in values if value for form in (value, quote(value, safe=""), quote(value),
                                                             quote_plus(value))}
    _literal_secrets = tuple(sorted((f for f in forms if len(f) >= _MIN_LITERAL_LENGTH), key=len, reverse=True))
    short = sorted((f for f in forms if len(f) < _MIN_LITERAL_LENGTH), key=len, reverse=True)
    _short_secrets = (re.compile(r"(?<![\w%])(?:" + "|".join(map(re.escape, short)) + r")(?![\w%])")
                      if short else None)


def redact(text: str) -> str:
    """Mask configured secrets and anything shaped like a credential."""
    for secret in _literal_secrets:
        text = text.replace(secret, "[redacted]")
    if _short_secrets is not None:
        text = _short_secrets.sub("[redacted]", text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: "".join(g or "" for g in m.groups()) + "[redacted]", text)
    return text


# C0 and C1 controls, DEL and the Unicode line separators: text a client chose must never start a line of its own.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_control(text: str) -> str:
    """Newlines and every other control character written as escapes, so one record is always one line."""
    return _CONTROL.sub(_escaped, text)


class RedactingFormatter(logging.Formatter):
    """Text lines; context fields a call passed with `extra=` follow the message as `key=value`. The message and
    the fields are escaped (escape_control): clients choose parts of them (namespaces, request lines, names)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{field}={escape_control(str(value))}" for field in CONTEXT_FIELDS
                           if (value := getattr(record, field, None)) is not None)
        record.message = escape_control(record.message)
        line = super().formatMessage(record)
        return f"{line} [{context}]" if context else line

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


TEXT_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
# gunicorn's access line without its own timestamp (every format carries one) and without the referer, which can
# carry tokens in its URL; the request line is redacted like every other message.
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, and the trace when there is one.

    gunicorn's access lines also carry `method`, `status` and `duration_ms` as fields.
    """

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
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            entry.update(_access_fields(record.args))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"method": atoms.get("m")}
    for name, atom in (("status", "s"), ("duration_ms", "M")):
        try:
            fields[name] = int(atoms.get(atom, "-"))
        except (TypeError, ValueError):  # gunicorn's '-' for a value it does not know
            pass
    return fields


def formatter_for(fmt: str) -> logging.Formatter:
    """The one formatter of the chosen format (`text` or `json`); both redact secrets."""
    return JsonFormatter() if fmt == "json" else RedactingFormatter(TEXT_FORMAT)


def configure_logging(level: str = "INFO", fmt: str = "text", library_level: str = "WARNING") -> None:
    """Route every logger to stdout in the chosen format; idempotent, so repeated app factories don't stack handlers.

    Under the `flask` command line (a click context is active while it loads the app) the lines go to stderr
    instead: a command's output is its own, so `TOKEN=$(flask tokens create ...)` holds the token alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_signalboard", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr if click.get_current_context(silent=True) else sys.stdout)
    handler._signalboard = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter_for(fmt))
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # a Python warning becomes a log line in the same format, not raw stderr text
    # The libraries log every packet at INFO; they get their own, quieter level (their own loggers, so they can
    # still be turned up for debugging).
    for name in ("engineio", "socketio", "engineio.server", "socketio.server"):
        logging.getLogger(name).setLevel(library_level)
    _route_gunicorn_through(handler.formatter)


def _route_gunicorn_through(formatter: logging.Formatter | None) -> None:
    """gunicorn's own error and access logs use the same formatter, so every line has one shape and is redacted."""
    for name in ("gunicorn.error", "gunicorn.access"):
        for existing in logging.getLogger(name).handlers:
            existing.setFormatter(formatter)


def gunicorn_logger_class(fmt: str) -> type:
    """A gunicorn `logger_class` writing gunicorn's own lines to stdout in our format, from the master's first line
    on (before any app exists to call configure_logging)."""
    from gunicorn.glogging import Logger  # only gunicorn.conf.py needs it

    class SignalboardGunicornLogger(Logger):
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                for handler in logger.handlers:
                    handler.setFormatter(formatter_for(fmt))
                    if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                        handler.setStream(sys.stdout)

    return SignalboardGunicornLogger
