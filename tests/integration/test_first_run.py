"""The development first run on the real server (start.sh + gunicorn): the start-up block appears once per start
(not from the worker, not again when the worker restarts), its curl command and token work, restarts keep the
secrets, the demo feeds arrive over Socket.IO and stop with the drain, and `flask demo` prints them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import socketio

from tests.server import ROOT, TEST_ENV, ServerProcess

pytestmark = pytest.mark.integration

BANNER_TITLE = "Signalboard is running (development"


def development(tmp_path: Path, **env) -> dict:
    """A fresh clone's environment: development, nothing configured (empty means unset), its own secrets file."""
    return {"SIGNALBOARD_ENV": "development", "API_KEYS": "", "SECRET_KEY": "", "DASHBOARD_PASSWORD": "",
            "DEV_SECRETS_FILE": str(tmp_path / "dev.json"), **env}


def banner_field(log: str, name: str) -> str:
    match = re.search(rf"^  {name} +(.+)$", log, re.MULTILINE)
    assert match, f"no {name} line in the start-up block"
    return match.group(1)


def receive(url: str, token: str, channels: list[str], count: int, timeout: float = 10) -> list[tuple]:
    """Subscribe with `token` and collect (event, data, meta) until `count` messages came."""
    got: list[tuple] = []
    client = socketio.Client(reconnection=False)
    client.on("*", lambda event, data=None, meta=None: got.append((event, data, meta)))
    client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=5)
    try:
        for channel in channels:
            assert client.call("subscribe", {"channel": channel}, timeout=5)["ok"] is True
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.disconnect()
    return got


def test_first_run_prints_a_working_login_once(server_factory, tmp_path):
    server = server_factory(**development(tmp_path))
    server.wait_until(lambda: BANNER_TITLE in server.log(), what="the start-up block")
    log = server.log()
    assert log.count(BANNER_TITLE) == 1
    kept = json.loads((tmp_path / "dev.json").read_text())
    password = banner_field(log, "Dashboard").split("password: ")[1]
    assert password == kept["DASHBOARD_PASSWORD"] and banner_field(log, "API key") == kept["API_KEY"]
    assert kept["SECRET_KEY"] not in log

    # The printed curl command, run as printed, publishes.
    curl = banner_field(log, "Publish")
    done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0 and json.loads(done.stdout)["channel"] == "demo.hello", done.stdout + done.stderr

    # The printed token subscribes to the demo feeds, which publish through the hub a message a second each.
    got = receive(server.url, banner_field(log, "Token"), ["demo.ticker", "demo.jobs"], count=4)
    assert {meta["channel"] for _, _, meta in got} == {"demo.ticker", "demo.jobs"}
    assert {event for event, _, meta in got if meta["channel"] == "demo.ticker"} == {"tick"}

    # The printed password logs in to the dashboard.
    session = requests.Session()
    page = session.get(server.url + "/login", timeout=5).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    login = session.post(server.url + "/login", data={"csrf_token": csrf, "password": password}, timeout=5,
                         allow_redirects=False)
    assert login.status_code == 302 and login.headers["Location"].endswith("/")

    # A worker restart (killed, respawned by the master) prints nothing more.
    old_worker = server.worker_pid()
    os.kill(old_worker, signal.SIGKILL)
    server.wait_until(lambda: _new_worker_answers(server, old_worker), timeout=30, what="a new worker")
    assert server.log().count(BANNER_TITLE) == 1
    server.stop()
    assert "demo publisher stopped" in server.log()  # the drain stopped the feed

    # A restart keeps the secrets: same password, same key, and the old token still verifies.
    again = server_factory(**development(tmp_path))
    again.wait_until(lambda: BANNER_TITLE in again.log(), what="the start-up block")
    assert banner_field(again.log(), "Dashboard") == banner_field(log, "Dashboard").replace(server.url, again.url)
    assert banner_field(again.log(), "API key") == kept["API_KEY"]
    assert receive(again.url, banner_field(log, "Token"), ["demo.ticker"], count=1)


def _new_worker_answers(server: ServerProcess, old_worker: int) -> bool:
    try:
        return server.worker_pid() != old_worker and requests.get(server.url + "/livez", timeout=1).ok
    except (AssertionError, FileNotFoundError, requests.RequestException):
        return False


def test_configured_secrets_are_never_printed(server_factory, tmp_path):
    server = server_factory(**development(tmp_path, API_KEYS="configured-key-123456",
                                          DASHBOARD_PASSWORD="configured-password-1",
                                          SECRET_KEY="configured-secret-0123"))
    server.wait_until(lambda: BANNER_TITLE in server.log(), what="the start-up block")
    log = server.log()
    for secret in ("configured-key-123456", "configured-password-1", "configured-secret-0123"):
        assert secret not in log
    assert not (tmp_path / "dev.json").exists()  # nothing was generated, so nothing is kept
    curl = banner_field(log, "Publish")
    done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=10, check=False,
                          env={**os.environ, "SIGNALBOARD_API_KEY": "configured-key-123456"})
    assert json.loads(done.stdout)["channel"] == "demo.hello", done.stdout + done.stderr


def test_production_prints_nothing_and_runs_no_demo(server_factory, tmp_path):
    server = server_factory(DEV_SECRETS_FILE=str(tmp_path / "dev.json"))
    requests.get(server.url + "/readyz", timeout=5)
    time.sleep(1.5)
    assert BANNER_TITLE not in server.log() and "demo publisher" not in server.log()
    assert not (tmp_path / "dev.json").exists()
    key = TEST_ENV["API_KEYS"].split(",")[0]
    channels = requests.get(server.url + "/api/v1/channels", timeout=5,
                            headers={"Authorization": f"Bearer {key}"}).json()["channels"]
    assert [c for c in channels if c["channel"].startswith("demo.")] == []


def test_demo_off_publishes_nothing(server_factory, tmp_path):
    server = server_factory(**development(tmp_path, DEMO="0"))
    server.wait_until(lambda: BANNER_TITLE in server.log(), what="the start-up block")
    time.sleep(1.5)
    key = json.loads((tmp_path / "dev.json").read_text())["API_KEY"]
    channels = requests.get(server.url + "/api/v1/channels", timeout=5,
                            headers={"Authorization": f"Bearer {key}"}).json()["channels"]
    assert channels == [] and "off (DEMO=0)" in server.log()


def test_flask_demo_prints_http_in_and_socketio_out(server_factory, tmp_path):
    env = development(tmp_path)
    server = server_factory(**env)
    command = [str(Path(sys.executable).with_name("flask")), "--app", "app", "demo", "--count", "5"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **env, "PORT": str(server.port), "LOG_LEVEL": "ERROR"})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Subscribed to demo.ticker, demo.jobs, demo.hello at " + server.url)
    assert any(line.startswith("  → HTTP       POST /api/v1/publish   demo.hello hello") for line in lines)
    received = [line for line in lines if line.startswith("  ← Socket.IO")]
    assert len(received) >= 5 and any("demo.hello #" in line and "hello from flask demo" in line for line in received)
    assert any("demo.ticker #" in line for line in received)


def test_flask_demo_says_when_no_server_answers(tmp_path):
    env = {**os.environ, **development(tmp_path), "PORT": "9", "LOG_LEVEL": "ERROR"}
    done = subprocess.run([str(Path(sys.executable).with_name("flask")), "--app", "app", "demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "is the server running (make run)?" in done.stderr
    assert "Traceback" not in done.stderr
