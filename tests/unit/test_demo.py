"""The development first run in-process: the start-up block shows only generated secrets, the demo feeds publish
through the hub and stop, the dashboard opens on them, and the panel's snippets carry a token for one channel."""

from __future__ import annotations

import json
import re
import shlex
import threading

import jwt
import pytest

from app import create_app
from blueprints.demo.banner import first_run_banner
from blueprints.demo.publisher import JOBS_CHANNEL, TICKER_CHANNEL, DemoPublisher
from blueprints.demo.snippets import client_snippets
from blueprints.realtime.services import hub_services
from config import load_config
from tests.conftest import UNIT_CONFIG
from tests.unit.test_dashboard import HTTPS, dashboard_socket, log_in, page_token


@pytest.fixture
def dev_environ(tmp_path):
    return {"SIGNALBOARD_ENV": "development", "DEV_SECRETS_FILE": str(tmp_path / "dev.json")}


def test_banner_shows_what_was_generated(dev_environ):
    config = load_config(environ=dev_environ)
    banner = first_run_banner(config)
    assert f"http://127.0.0.1:5000/   password: {config['DASHBOARD_PASSWORD']}" in banner
    assert f"API key    {config['API_KEYS'][0]}" in banner
    curl = re.search(r"Publish    (curl .*)", banner).group(1)
    words = shlex.split(curl)
    assert words[words.index("-H") + 1] == f"Authorization: Bearer {config['API_KEYS'][0]}"
    assert json.loads(words[words.index("-d") + 1])["channel"] == "demo.hello"
    token = re.search(r"Token      (\S+)", banner).group(1)
    claims = jwt.decode(token, config["SECRET_KEY"], algorithms=["HS256"])
    assert (claims["sub"], claims["channels"], claims["exp"] - claims["iat"]) == ("demo", ["demo.*"], 86400)
    assert config["SECRET_KEY"] not in banner  # signs tokens; never shown, even generated


def test_banner_never_shows_a_configured_secret(dev_environ):
    config = load_config(environ={**dev_environ, "API_KEYS": "configured-key-1,configured-key-2",
                                  "DASHBOARD_PASSWORD": "configured-password", "SECRET_KEY": "configured-secret-key"})
    banner = first_run_banner(config)
    for secret in ("configured-key-1", "configured-key-2", "configured-password", "configured-secret-key"):
        assert secret not in banner
    assert "$SIGNALBOARD_API_KEY" in banner and "Kept in" not in banner


def test_no_banner_in_production():
    assert first_run_banner(load_config(environ={"SECRET_KEY": "a-real-secret-of-some-length"})) is None


def test_demo_feeds_publish_through_the_hub_and_stop(app):
    hub = hub_services(app).hub
    started: list[threading.Thread] = []

    def start(name, target, stop):
        thread = threading.Thread(target=target, daemon=True)
        started.append(thread)
        thread.start()
        return thread

    publisher = DemoPublisher(hub, start, interval=0.01, seed=1)
    publisher.ensure_started()
    publisher.ensure_started()  # a second first request starts nothing more
    deadline = threading.Event()
    for _ in range(200):
        if hub.history.latest(JOBS_CHANNEL) >= 12:
            break
        deadline.wait(0.01)
    publisher.stop()
    assert len(started) == 1 and not started[0].is_alive()
    ticks, _ = hub.history.since(TICKER_CHANNEL, 0)
    jobs, _ = hub.history.since(JOBS_CHANNEL, 0)
    assert len(ticks) >= 12 and {m.event for m in ticks} == {"tick"}
    assert {"started", "progress", "done"} <= {m.event for m in jobs}
    progress = [m.data["progress"] for m in jobs if m.data["job"] == 1]
    assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 100
    count = hub.history.latest(TICKER_CHANNEL)
    publisher.ensure_started()  # stopped for good: the drain has run
    assert len(started) == 1 and hub.history.latest(TICKER_CHANNEL) == count


def dev_app(tmp_path, **extra):
    return create_app({**UNIT_CONFIG, "SIGNALBOARD_ENV": "development", "SESSION_COOKIE_SECURE": True,
                       "DEV_SECRETS_FILE": str(tmp_path / "dev.json"), **extra})


def test_development_app_wires_the_demo(tmp_path):
    app = dev_app(tmp_path)
    publisher = app.extensions["demo"]
    assert app.extensions["dashboard"]["initial_watch"] == ["demo.ticker", "demo.jobs", "demo.hello"]
    assert not publisher.running  # nothing before the first request (a CLI command's app never starts it)
    assert app.extensions["background_tasks"].running() == []
    with app.test_request_context():
        app.preprocess_request()  # the first request starts it, as a task the drain stops
    assert "demo publisher" in app.extensions["background_tasks"].running()  # (its publishes start the fan-out)
    assert app.extensions["background_tasks"].stop_all() == []
    assert not publisher.running
    publisher.stop()
    quiet = dev_app(tmp_path, DEMO=False)
    assert "demo" not in quiet.extensions and quiet.extensions["dashboard"]["initial_watch"] == ["demo.hello"]
    production = create_app(UNIT_CONFIG)
    assert "demo" not in production.extensions and production.extensions["dashboard"]["initial_watch"] == []


def test_dashboard_opens_watching_the_demo_channels(tmp_path):
    app = dev_app(tmp_path, DEMO=False)
    client = app.test_client()
    log_in(client, app.config["DASHBOARD_PASSWORD"])
    html = client.get("/", base_url=HTTPS).get_data(as_text=True)
    assert '<meta name="initial-watch" content="demo.hello">' in html
    assert 'id="connect-channel" value="demo.hello"' in html


def test_panel_snippets_carry_a_short_token_for_one_channel(app):
    client = app.test_client()
    log_in(client)
    sock = dashboard_socket(app, client, {"csrf": page_token(client)})
    ack = sock.emit("client_snippets", {"channel": "orders.eu"}, namespace="/dashboard", callback=True)
    assert ack["ok"] is True and ack["channel"] == "orders.eu"
    token = re.search(r'token: "([^"]+)"', ack["snippets"]["javascript"]).group(1)
    claims = hub_services(app).tokens.verify(token)
    assert (claims.sub, tuple(claims.channels), claims.exp) == ("dashboard-snippet", ("orders.eu",), ack["expires_at"])
    assert claims.exp - claims.iat == 600 and not claims.publish
    assert ack["snippets"] == client_snippets("http://localhost", "orders.eu", token)  # the socket's own address
    bad = sock.emit("client_snippets", {"channel": "orders..eu"}, namespace="/dashboard", callback=True)
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_channel"
    not_an_object = sock.emit("client_snippets", "x", namespace="/dashboard", callback=True)
    assert not_an_object["error"]["code"] == "invalid_payload"


def test_snippets_are_valid_code_with_the_values_filled_in():
    snippets = client_snippets("http://127.0.0.1:5000", "orders.eu", "tok.en.value")
    compile(snippets["python"], "snippet.py", "exec")
    assert 'sio.connect("http://127.0.0.1:5000", auth={"token": "tok.en.value"})' in snippets["python"]
    assert 'io("http://127.0.0.1:5000", { auth: { token: "tok.en.value" } })' in snippets["javascript"]
    words = shlex.split(snippets["curl"])
    assert words[-1] == "http://127.0.0.1:5000/api/v1/publish" and "Bearer $SIGNALBOARD_API_KEY" in snippets["curl"]
    assert json.loads(words[words.index("-d") + 1])["channel"] == "orders.eu"


def test_readme_quick_start_is_short_and_names_what_the_code_does():
    from blueprints.demo import DEMO_CHANNELS
    from config import SETTINGS
    from tests.server import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start\n", 1)[1].split("\n## ", 1)[0].strip().splitlines()
    assert len(section) <= 10 and section[1].startswith("make run")
    text = " ".join(section)
    secrets_file = next(s.default for s in SETTINGS if s.name == "DEV_SECRETS_FILE")
    assert f"`{secrets_file}`" in text and all(f"`{channel}`" in text for channel in DEMO_CHANNELS)
    assert readme.index("\n## ") == readme.index("\n## Quick start")  # the first section
