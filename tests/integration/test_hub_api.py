"""The /api/v1 HTTP API against the real server (start.sh + gunicorn): auth, publish, tokens, reads, every bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import jwt
import pytest
import requests

from tests.hub.realtime_client import Api, HubClient, unique
from tests.server import ROOT, TEST_ENV, ServerProcess, module_server

pytestmark = pytest.mark.integration

SECRET = TEST_ENV["SECRET_KEY"]
MAX_PAYLOAD = 1024


server = module_server(MAX_PAYLOAD_BYTES=MAX_PAYLOAD, API_RATE_LIMIT=0)


@pytest.fixture(scope="module")
def api(server):
    return Api(server)


def error_of(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    assert "Traceback" not in response.text and SECRET not in response.text
    return body["error"]


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "api_key_missing"),
        ({"Authorization": "Bearer"}, "api_key_missing"),
        ({"Authorization": "Basic dGVzdC1rZXktMQ=="}, "api_key_missing"),
        ({"Authorization": "Bearer test-key-3"}, "api_key_invalid"),
        ({"Authorization": "Bearer test-api-key-1-0123456789x"}, "api_key_invalid"),
        ({"Authorization": "Bearer tést"}, "api_key_invalid"),
    ],
)
def test_api_key_required(server, headers, reason):
    response = requests.post(
        server.url + "/api/v1/publish", json={"channel": "a", "event": "e"}, headers=headers, timeout=10
    )
    error = error_of(response, 401)
    assert error["code"] == "unauthorized" and error["reason"] == reason
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_configured_key_works(server):
    channel = unique("keys")
    assert Api(server, "test-api-key-1-0123456789").publish(channel)["offset"] == 1
    assert Api(server, "test-api-key-2-0123456789").publish(channel)["offset"] == 2


def test_publish_answers_id_and_offset(api):
    channel = unique("orders")
    results = [api.publish(channel, "created", {"n": n}) for n in range(10)]
    assert [r["offset"] for r in results] == list(range(1, 11))
    assert len({r["id"] for r in results}) == 10
    assert all(r["channel"] == channel and isinstance(r["ts"], int) for r in results)
    assert api.publish(unique("other"))["offset"] == 1  # offsets are per channel


def test_concurrent_publishers_get_contiguous_offsets(api, server):
    channel = unique("busy")
    offsets: list[int] = []
    lock = threading.Lock()

    def publish() -> None:
        mine = Api(server)
        for _ in range(25):
            offset = mine.publish(channel)["offset"]
            with lock:
                offsets.append(offset)

    threads = [threading.Thread(target=publish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(offsets) == list(range(1, 201))


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"channel": "bad name", "event": "e"}, 400, "invalid_channel"),
        ({"channel": "x" * 129, "event": "e"}, 400, "invalid_channel"),
        ({"channel": "a..b", "event": "e"}, 400, "invalid_channel"),
        ({"event": "e"}, 400, "invalid_channel"),
        ({"channel": 5, "event": "e"}, 400, "invalid_channel"),
        ({"channel": "ok"}, 400, "invalid_event"),
        ({"channel": "ok", "event": "connect"}, 400, "invalid_event"),
        ({"channel": "ok", "event": "disconnect"}, 400, "invalid_event"),
        ({"channel": "ok", "event": "connect_error"}, 400, "invalid_event"),
        ({"channel": "ok", "event": "signalboard:presence"}, 400, "invalid_event"),
        ({"channel": "ok", "event": "e" * 65}, 400, "invalid_event"),
        ({"channel": "ok", "event": "e", "data": "x" * MAX_PAYLOAD}, 413, "payload_too_large"),
        (["not", "an", "object"], 400, "invalid_payload"),
    ],
)
def test_bad_publish_input(api, body, status, code):
    assert error_of(api.post("/publish", body), status)["code"] == code


@pytest.mark.parametrize(
    "raw, status, code",
    [
        (b"{not json", 400, "invalid_payload"),
        (b"", 400, "invalid_payload"),
        (b'{"channel": "ok", "event": "e", "data": NaN}', 400, "invalid_payload"),
        (b'{"channel": "ok", "event": "e", "data": "' + b"x" * 500_000 + b'"}', 413, "payload_too_large"),
        (b"\xff\xfe", 400, "invalid_payload"),
    ],
)
def test_bad_publish_bodies(api, raw, status, code):
    response = api.session.post(api.base + "/publish", data=raw, timeout=10)
    assert error_of(response, status)["code"] == code


def test_an_answer_before_a_large_body_closes_the_connection_it_says_it_closes(api):
    """gunicorn drains at most 64 KiB of an unread body: past that it must announce the close, or the client reuses
    a connection about to be closed and loses its next request (integration/gunicorn_keepalive.py)."""
    large = b'{"channel": "ok", "event": "e", "data": "' + b"x" * 500_000 + b'"}'
    for _ in range(5):
        refused = api.session.post(api.base + "/publish", data=large, timeout=10)
        assert refused.status_code == 413 and refused.headers["Connection"] == "close"
        assert api.post("/publish", {"channel": unique("after"), "event": "e"}).status_code == 200
    small = api.session.post(api.base + "/publish", data=b"\xff\xfe", timeout=10)
    assert small.status_code == 400 and small.headers["Connection"] == "keep-alive"  # a small body is drained


def test_batch_publish_is_ordered_and_all_or_nothing(api):
    a, b = unique("batch"), unique("batch")
    response = api.post("/publish/batch", {"messages": [{"channel": a, "event": "e", "data": 1},
                                                         {"channel": b, "event": "e"},
                                                         {"channel": a, "event": "e", "data": 2}]})
    assert response.status_code == 200, response.text
    assert [(r["channel"], r["offset"]) for r in response.json()["results"]] == [(a, 1), (b, 1), (a, 2)]
    bad = api.post("/publish/batch", {"messages": [{"channel": a, "event": "e"}, {"channel": a, "event": "connect"}]})
    assert error_of(bad, 400)["code"] == "invalid_event"
    assert api.get(f"/channels/{a}/history").json()["offset"] == 2  # nothing of the refused batch was stored
    assert error_of(api.post("/publish/batch", {"messages": []}), 400)["code"] == "invalid_payload"
    assert error_of(api.post("/publish/batch", {}), 400)["code"] == "invalid_payload"


def test_tokens_are_hs256_jwts_signed_with_secret_key(api):
    before = int(time.time())
    response = api.post("/tokens", {"sub": "alice", "channels": ["orders.*", "public:news"], "ttl": 120})
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["channels"] == ["orders.*", "public:news"]
    assert before + 120 <= claims["exp"] <= int(time.time()) + 120
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert response.json()["expires_at"] == claims["exp"]


@pytest.mark.parametrize(
    "body, code",
    [
        ({"sub": "a", "channels": ["x"], "ttl": 0}, "invalid_payload"),
        ({"sub": "a", "channels": ["x"], "ttl": "60"}, "invalid_payload"),
        ({"sub": "a", "channels": ["x"], "ttl": 10**9}, "invalid_payload"),
        ({"sub": "", "channels": ["x"], "ttl": 60}, "invalid_payload"),
        ({"channels": ["x"], "ttl": 60}, "invalid_payload"),
        ({"sub": "a", "channels": "x", "ttl": 60}, "invalid_payload"),
        ({"sub": "a", "channels": ["bad name"], "ttl": 60}, "invalid_channel"),
        ({"sub": "a", "channels": ["x"], "ttl": 60, "publish": ["**.x"]}, "invalid_channel"),
    ],
)
def test_bad_token_requests(api, body, code):
    assert error_of(api.post("/tokens", body), 400)["code"] == code


def test_channels_presence_and_history(api, server):
    channel = unique("watched")
    for n in range(5):
        api.publish(channel, "tick", {"n": n})
    clients = []
    for sub in ("alice", "alice", "bob"):
        client = HubClient(server.url).connect({"token": api.token(sub, [channel])})
        assert client.call("subscribe", {"channel": channel})["ok"] is True
        clients.append(client)
    try:
        listed = {c["channel"]: c for c in api.get("/channels").json()["channels"]}
        assert listed[channel] == {"channel": channel, "subscribers": 3, "offset": 5}
        presence = api.get(f"/channels/{channel}/presence").json()
        assert presence == {
            "channel": channel,
            "connections": 3,
            "anonymous": 0,
            "subscribers": [{"sub": "alice", "connections": 2}, {"sub": "bob", "connections": 1}],
        }
        history = api.get(f"/channels/{channel}/history", params={"since": 1, "limit": 3}).json()
        assert [m["offset"] for m in history["messages"]] == [2, 3, 4]
        assert history["messages"][0]["data"] == {"n": 1} and history["messages"][0]["event"] == "tick"
        assert history["complete"] is True and history["offset"] == 5 and history["epoch"]
    finally:
        for client in clients:
            client.disconnect()
    server.wait_until(lambda: api.get(f"/channels/{channel}/presence").json()["connections"] == 0,
                      what="presence to empty after disconnects")


@pytest.mark.parametrize(
    "path, code",
    [
        ("/channels/bad%20name/presence", "invalid_channel"),
        ("/channels/bad%20name/history", "invalid_channel"),
        ("/channels/ok/history?since=-1", "invalid_payload"),
        ("/channels/ok/history?since=abc", "invalid_payload"),
        ("/channels/ok/history?limit=0", "invalid_payload"),
        ("/channels/ok/history?limit=100000", "invalid_payload"),
    ],
)
def test_bad_reads(api, path, code):
    assert error_of(api.get(path), 400)["code"] == code


def test_unknown_routes_and_methods_are_json(api):
    assert error_of(api.get("/nope"), 404)["code"] == "not_found"
    assert error_of(api.get("/publish"), 405)["code"] == "method_not_allowed"


def test_rate_limit_per_key_leaves_other_keys_alone():
    with ServerProcess(API_RATE_LIMIT=1, API_RATE_BURST=3) as server:
        limited, other = Api(server, "test-api-key-1-0123456789"), Api(server, "test-api-key-2-0123456789")
        channel = unique("limited")
        statuses = [limited.post("/publish", {"channel": channel, "event": "e"}).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        refused = limited.post("/publish", {"channel": channel, "event": "e"})
        error = error_of(refused, 429)
        assert error["code"] == "rate_limited" and error["retry_after"] > 0
        assert int(refused.headers["Retry-After"]) >= 1
        assert other.publish(channel)["offset"] == 4  # the refused call stored nothing; the other key is unaffected
        assert server.bad_log_lines() == []


def flask_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **TEST_ENV}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_tokens_from_the_command_line():
    result = flask_cli("tokens", "create", "--sub", "ops", "--channel", "orders.*", "--channel", "public:news",
                       "--publish", "orders.eu", "--ttl", "90")
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ops" and claims["channels"] == ["orders.*", "public:news"]
    assert claims["publish"] == ["orders.eu"] and claims["exp"] - claims["iat"] == 90
    refused = flask_cli("tokens", "create", "--sub", "ops", "--channel", "bad name")
    assert refused.returncode == 2 and "invalid channel pattern" in refused.stderr
    assert "Traceback" not in refused.stderr
