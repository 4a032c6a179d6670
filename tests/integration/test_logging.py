"""The real server's whole output, in both formats: every line has the format's shape (gunicorn's own lines too),
the access log appears only when asked for, and no credential a client sent or the server holds is ever written,
even at DEBUG with the Socket.IO libraries logging every packet."""

from __future__ import annotations

import json
import re
import signal

import pytest
import requests
import socketio

from tests.server import TEST_ENV

pytestmark = pytest.mark.integration

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] [\w.]+: ")
METRICS_TOKEN = "metrics-token-never-logged"
QUERY_TOKEN = "query-token-never-logged"
COOKIE_VALUE = "cookie-value-never-logged"
WRONG_KEY = "wrong-key-never-logged"


def exercise(server, jwt: str | None = None) -> list[str]:
    """Requests and a Socket.IO session that carry secrets every way a client can; returns those secrets."""
    api_key = TEST_ENV["API_KEYS"].split(",")[0]
    assert requests.get(f"{server.url}/readyz?token={QUERY_TOKEN}", timeout=5).status_code == 200
    assert requests.get(server.url + "/livez", headers={"Cookie": f"session={COOKIE_VALUE}"}, timeout=5).ok
    assert requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5).ok
    refused = requests.post(server.url + "/api/v1/publish", headers={"Authorization": f"Bearer {WRONG_KEY}"},
                            json={"channel": "public:news", "event": "x", "data": 1}, timeout=5)
    assert refused.status_code == 401
    client = socketio.Client(reconnection=False)
    client.connect(f"{server.url}?token={QUERY_TOKEN}", transports=["polling"], wait_timeout=5,
                   headers={"Cookie": f"session={COOKIE_VALUE}", "X-Api-Key": api_key},
                   auth={"token": jwt} if jwt else None)
    assert client.call("subscribe", {"channel": "public:news"}, timeout=5)["ok"] is True
    published = requests.post(server.url + "/api/v1/publish", headers={"Authorization": f"Bearer {api_key}"},
                              json={"channel": "public:news", "event": "x", "data": 1}, timeout=5)
    assert published.status_code == 200
    client.disconnect()
    secrets = [api_key, QUERY_TOKEN, COOKIE_VALUE, WRONG_KEY, TEST_ENV["SECRET_KEY"]]
    return secrets + ([jwt] if jwt else [])


def stop_cleanly(server) -> str:
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0
    return server.log()


def test_text_format_by_default_without_access_log(server_factory):
    server = server_factory(ALLOW_ANONYMOUS="1", METRICS_TOKEN=METRICS_TOKEN)
    secrets = exercise(server) + [METRICS_TOKEN]
    log = stop_cleanly(server)
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines, "the server wrote nothing"
    assert [line for line in lines if not TEXT_LINE.match(line)] == []
    assert any("utils.drain: graceful shutdown" in line for line in lines)
    assert not any("gunicorn.access" in line for line in lines)
    assert [s for s in secrets if s in log] == []


def test_json_lines_with_access_log_at_debug(server_factory):
    server = server_factory(LOG_FORMAT="json", LOG_LEVEL="DEBUG", SOCKETIO_LOG_LEVEL="DEBUG", ACCESS_LOG="1",
                            ALLOW_ANONYMOUS="1", METRICS_TOKEN=METRICS_TOKEN)
    api_key = TEST_ENV["API_KEYS"].split(",")[0]
    minted = requests.post(server.url + "/api/v1/tokens", headers={"Authorization": f"Bearer {api_key}"},
                           json={"sub": "user-1", "channels": ["public:news"], "ttl": 600}, timeout=5)
    assert minted.status_code == 200
    secrets = exercise(server, minted.json()["token"]) + [METRICS_TOKEN]
    log = stop_cleanly(server)

    entries = []
    for number, line in enumerate(log.splitlines(), 1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"line {number} is not JSON: {line!r}")
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert entry["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    loggers = {entry["logger"] for entry in entries}
    assert {"gunicorn.error", "gunicorn.access", "engineio.server", "socketio.server", "utils.drain"} <= loggers
    access = [entry for entry in entries if entry["logger"] == "gunicorn.access"]
    readyz = [entry for entry in access if "/readyz?token=[redacted]" in entry["message"]]
    assert readyz and readyz[0]["status"] == 200 and readyz[0]["method"] == "GET"
    assert any(entry.get("status") == 401 for entry in access)  # the refused publish is logged, its key is not
    assert not any(entry["level"] in ("ERROR", "CRITICAL") for entry in entries)
    assert [s for s in secrets if s in log] == []
