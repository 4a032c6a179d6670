"""The application-level holes of issue 14 against the real server: key guessing, Host-built redirects, what the
public sees of /metrics, /readyz and presence, and secrets too short to stand a guesser."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
import requests

from tests.hub.realtime_client import Api, HubClient, unique
from tests.reliability.support import running_server
from tests.server import ROOT, TEST_ENV, ServerProcess, free_port

pytestmark = pytest.mark.integration

KEY = TEST_ENV["API_KEYS"].split(",")[0]


@pytest.fixture(scope="module")
def server():
    with running_server(ALLOW_ANONYMOUS=1, METRICS_PUBLIC=0) as running:
        yield running
        assert running.bad_log_lines() == []


def raw_get(server: ServerProcess, path: str, host: str) -> bytes:
    """A request with exactly this Host header (requests would fix it)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_thirty_wrong_api_keys_get_429_and_one_log_line():
    """Before: 1,230 guesses/s from one address, never a 429."""
    with running_server() as server:
        statuses = []
        for n in range(30):
            response = requests.post(server.url + "/api/v1/publish", json={"channel": "a", "event": "e"},
                                     headers={"Authorization": f"Bearer guess-{n:02d}-0123456789abcdef"}, timeout=10)
            statuses.append(response.status_code)
            assert f"guess-{n:02d}" not in server.log()
        assert statuses == [401] * 5 + [429] * 25, statuses
        right = requests.post(server.url + "/api/v1/publish", json={"channel": "a", "event": "e"},
                              headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
        assert right.status_code == 429 and right.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(right.headers["Retry-After"]) <= 60
        lines = [line for line in server.log().splitlines() if "127.0.0.1" in line and "wrong" in line]
        assert len(lines) == 1 and "wrong API key from 127.0.0.1" in lines[0], lines
        assert server.bad_log_lines() == []


def test_no_redirect_is_built_from_a_foreign_host(server):
    """Before: `GET /static//x` with `Host: evil.example` answered 308 to http://evil.example/static/x."""
    answer = raw_get(server, "/static//dashboard.css", "evil.example")
    assert answer.startswith(b"HTTP/1.1 404") and b"evil.example" not in answer, answer[:300]


def test_allowed_hosts_refuse_other_hosts():
    with running_server(ALLOWED_HOSTS="127.0.0.1,signalboard.example") as server:
        for path in ("/livez", "/static//dashboard.css", "/socket.io/?EIO=4&transport=polling"):
            answer = raw_get(server, path, "evil.example")
            assert answer.startswith(b"HTTP/1.1 400") and b'"invalid_host"' in answer, (path, answer[:300])
        assert raw_get(server, "/livez", "signalboard.example:443").startswith(b"HTTP/1.1 200")
        assert requests.get(server.url + "/livez", timeout=10).status_code == 200  # Host: 127.0.0.1:<port>


def test_metrics_and_readyz_figures_are_not_public_in_production(server):
    """Before: /metrics was open by default and /readyz showed exact free capacity (sizing attacks 1-2)."""
    metrics = requests.get(server.url + "/metrics", timeout=10)
    assert metrics.status_code == 403 and metrics.json()["error"]["code"] == "metrics_closed"
    assert "signalboard_" not in metrics.text
    ready = requests.get(server.url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "reasons": {}}


def test_metrics_token_opens_both():
    token = "metrics-token-for-the-tests-0123"
    with running_server(METRICS_PUBLIC=0, METRICS_TOKEN=token) as server:
        headers = {"Authorization": f"Bearer {token}"}
        assert "signalboard_connected_clients" in requests.get(server.url + "/metrics", headers=headers,
                                                               timeout=10).text
        assert requests.get(server.url + "/readyz", headers=headers, timeout=10).json()["budget"]["free"] > 0


def presence_events(client: HubClient) -> list[dict]:
    return [d.data for d in client.deliveries() if d.event == "signalboard:presence"]


def test_anonymous_presence_listeners_get_no_subs(server):
    """Before: presence events showed named users' `sub` to anonymous subscribers of public channels."""
    channel = unique("public:lobby")
    api = Api(server)
    anonymous, named, bob = HubClient(server.url), HubClient(server.url), HubClient(server.url)
    try:
        anonymous.connect()
        named.connect({"token": api.token("carol", [channel])})
        for watcher in (anonymous, named):
            assert watcher.call("subscribe", {"channel": channel, "presence": True})["ok"] is True
        bob.connect({"token": api.token("bob", [channel])})
        assert bob.call("subscribe", {"channel": channel})["ok"] is True
        anonymous.wait_for(lambda: len(presence_events(anonymous)) == 2, what="carol's and bob's joins")
        named.wait_for(lambda: any(e["sub"] == "bob" for e in presence_events(named)), what="bob's join")
        assert {"channel": channel, "sub": "bob", "action": "join", "connections": 1} in presence_events(named)
        assert presence_events(anonymous) == [{"channel": channel, "sub": None, "action": "join", "connections": 1}] * 2
        assert "bob" not in str(anonymous.deliveries()) and "carol" not in str(anonymous.deliveries())
    finally:
        for client in (anonymous, named, bob):
            client.disconnect()


@pytest.mark.parametrize("name, value", [("API_KEYS", "short-key"), ("DASHBOARD_PASSWORD", "hunter2"),
                                         ("METRICS_TOKEN", "short-token")])
def test_short_secrets_stop_start_up_with_one_line(name, value):
    """Before: `API_KEYS=a` was accepted in production."""
    env = {**os.environ, **TEST_ENV, "HOST": "127.0.0.1", "PORT": str(free_port()), name: value}
    result = subprocess.run([str(ROOT / "start.sh")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip().splitlines()
    assert output == [f"signalboard: configuration error: {name} must be at least 16 characters in production"
                      f"{' (every key)' if name == 'API_KEYS' else ''}: use a random string"], output
    assert value not in result.stdout + result.stderr
