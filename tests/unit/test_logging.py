"""utils/logging_setup.py in process: both formats, context fields, gunicorn's lines, and secrets never written."""

from __future__ import annotations

import io
import json
import logging
import re
import sys

import pytest
from gunicorn.config import Config

from utils.logging_setup import (
    ACCESS_LOG_FORMAT,
    JsonFormatter,
    configure_logging,
    formatter_for,
    gunicorn_logger_class,
    redact,
    register_secrets,
)

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTEiLCJleHAiOjF9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture(autouse=True)
def restore_logging():
    """configure_logging changes process-wide state; put the root logger and the secret list back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    register_secrets([])


def record(message: str, *args, name: str = "signalboard.test", level: int = logging.INFO, exc_info=None,
           **extra) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, message, args, exc_info)
    for key, val in extra.items():
        setattr(rec, key, val)
    return rec


@pytest.mark.parametrize("text, secret", [
    ("GET /socket.io/?EIO=4&transport=polling&token=abc.def.ghi HTTP/1.1", "abc.def.ghi"),
    ("Authorization: Bearer some-opaque-key", "some-opaque-key"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ("{'HTTP_AUTHORIZATION': 'Bearer k1k2k3', 'HTTP_COOKIE': 'session=s3ss10n; theme=dark'}", "k1k2k3"),
    ("{'HTTP_COOKIE': 'session=s3ss10n; theme=dark'}", "theme=dark"),
    ("Cookie: session=s3ss10n", "s3ss10n"),
    ("Set-Cookie: session=s3ss10n; HttpOnly", "s3ss10n"),
    ("X-API-Key: raw-api-key-value", "raw-api-key-value"),
    ('{"token": "opaque-token-value", "channel": "public:x"}', "opaque-token-value"),
    (f"connect with {JWT}", JWT),
    ("access_token=tok123&api_key=key456", "tok123"),
    ("access_token=tok123&api_key=key456", "key456"),
    ("password: hunter22", "hunter22"),
])
def test_redact_masks_credential_shapes(text, secret):
    masked = redact(text)
    assert secret not in masked and "[redacted]" in masked


def test_redact_leaves_ordinary_text():
    text = "subscribed sid=Zx81 to public:news (3 clients), offset 12"
    assert redact(text) == text


def test_configured_secrets_are_masked_in_any_shape():
    register_secrets(["publisher-key-one", "abc"])
    assert redact("key publisher-key-one used; abc") == "key [redacted] used; [redacted]"
    assert redact("abcdef cabc abc_1") == "abcdef cabc abc_1"  # short ones only as whole words
    assert redact("x=publisher-key-one,y") == "x=[redacted],y"


def test_json_lines_carry_fields_context_and_redacted_trace():
    try:
        raise ValueError("token=leaky-token-value")
    except ValueError:
        exc_info = sys.exc_info()
    line = JsonFormatter().format(record("published to %s with %s", "orders.eu", f"Bearer {JWT}", level=logging.ERROR,
                                         exc_info=exc_info, sid="S1", channel="orders.eu", event="created"))
    entry = json.loads(line)
    assert "\n" not in line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert entry["level"] == "ERROR" and entry["logger"] == "signalboard.test"
    assert entry["message"] == "published to orders.eu with Bearer [redacted]"
    assert (entry["sid"], entry["channel"], entry["event"]) == ("S1", "orders.eu", "created")
    assert "ValueError" in entry["exception"] and "leaky-token-value" not in entry["exception"]


def test_json_access_lines_have_http_fields():
    atoms = {"h": "127.0.0.1", "r": "GET /readyz?token=qs-secret HTTP/1.1", "s": "503", "b": "90", "M": "4",
             "m": "GET"}
    entry = json.loads(JsonFormatter().format(record(ACCESS_LOG_FORMAT, atoms, name="gunicorn.access")))
    assert entry["message"] == '127.0.0.1 "GET /readyz?token=[redacted] HTTP/1.1" 503 90 4ms'
    assert (entry["method"], entry["status"], entry["duration_ms"]) == ("GET", 503, 4)


def test_text_lines_are_redacted_with_their_trace():
    try:
        raise RuntimeError("Authorization: Bearer trace-secret")
    except RuntimeError:
        exc_info = sys.exc_info()
    line = formatter_for("text").format(record("api_key=%s", "arg-secret", level=logging.WARNING, exc_info=exc_info))
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[WARNING\] signalboard\.test: api_key=\[redacted\]", line)
    assert "arg-secret" not in line and "trace-secret" not in line and "RuntimeError" in line


def test_text_lines_show_context_fields():
    line = formatter_for("text").format(record("subscribed", sid="S1", channel="public:news"))
    assert line.endswith("signalboard.test: subscribed [sid=S1 channel=public:news]")
    assert formatter_for("text").format(record("plain")).endswith("signalboard.test: plain")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_configure_logging_writes_one_line_per_record_to_stdout(fmt, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    configure_logging("DEBUG", fmt)
    configure_logging("DEBUG", fmt)  # a second app factory must not add a second handler
    register_secrets(["configured-api-key"])
    logging.getLogger("signalboard.test").debug("key configured-api-key in %s", "use")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "configured-api-key" not in lines[0] and "key [redacted] in use" in lines[0]
    if fmt == "json":
        assert json.loads(lines[0])["level"] == "DEBUG"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_gunicorn_logger_uses_our_format_on_stdout(fmt, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # gunicorn's default for errorlog "-"
    cfg = Config()
    cfg.set("errorlog", "-")
    cfg.set("accesslog", "-")
    cfg.set("loglevel", "info")
    logger = gunicorn_logger_class(fmt)(cfg)
    logger.info("Listening at: %s", "http://127.0.0.1:5000")
    logger.access_log.info(ACCESS_LOG_FORMAT, {"h": "127.0.0.1", "r": "GET /x?token=t0k3n HTTP/1.1", "s": "200",
                                               "b": "2", "M": "1", "m": "GET"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and sys.stderr.getvalue() == ""
    assert "t0k3n" not in out.getvalue()
    if fmt == "json":
        first, second = (json.loads(line) for line in lines)
        assert (first["logger"], first["level"]) == ("gunicorn.error", "INFO")
        assert second["logger"] == "gunicorn.access" and second["status"] == 200
    else:
        assert "[INFO] gunicorn.error: Listening at: http://127.0.0.1:5000" in lines[0]
        assert "[INFO] gunicorn.access: 127.0.0.1" in lines[1]


def test_url_encoded_secrets_are_masked():
    """Before: a key with `/`, `+` or `=` appeared URL-encoded in an access line's query string, unmasked."""
    register_secrets(["k3y/with+odd=chars&more", "a b"])
    assert redact("GET /x?k=k3y%2Fwith%2Bodd%3Dchars%26more") == "GET /x?k=[redacted]"
    assert redact("GET /x?q=k3y/with%2Bodd%3Dchars%26more") == "GET /x?q=[redacted]"
    assert redact("the a+b and a%20b") == "the [redacted] and [redacted]"
