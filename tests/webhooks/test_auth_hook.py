"""The authorization hook against a real backend process: connect without a token (allow, deny, slow, absent),
subscribes beyond the identity's grants (asked once, then cached), and the expiry warning answered by the hook."""

from __future__ import annotations

import json
import time

import pytest

from tests.hub.realtime_client import Api, HubClient, unique
from tests.server import free_port
from tests.webhooks.support import SECRET, verify

pytestmark = pytest.mark.integration


def _hook_env(url: str, **extra) -> dict:
    return {"AUTH_HOOK_URL": url, "WEBHOOK_SECRET": SECRET, "AUTH_HOOK_TIMEOUT_MS": 500, **extra}


def _requests(receiver, kind: str) -> list[dict]:
    return [verify(entry) for entry in receiver.entries("/auth") if json.loads(entry["body"])["type"] == kind]


def _connect(server, auth=None, headers=None) -> HubClient:
    client = HubClient(server.url)
    client.sio.connect(server.url, auth=auth, headers=headers or {}, transports=["websocket"], wait_timeout=10)
    return client


def _refusal(server, auth=None) -> tuple[dict, float]:
    client = HubClient(server.url)
    started = time.monotonic()
    error = client.try_connect(auth)
    return error, time.monotonic() - started


def test_the_hook_says_who_a_tokenless_connection_is_and_what_it_may_subscribe(server_factory, receiver):
    server = server_factory(**_hook_env(receiver.url + "/auth"))
    team, other, secret = unique("team"), unique("other"), unique("secret")
    receiver.control(auth={
        "connect": {"status": 200, "body": {"sub": "gus", "channels": [f"{team}"], "publish": [team],
                                            "exp": int(time.time()) + 300}},
        f"subscribe:{other}": {"status": 200},
        f"subscribe:{secret}": {"status": 403},
    })
    client = _connect(server, {"session": "s-1"}, {"Cookie": "app_session=abc", "X-Internal": "not forwarded"})
    connect = _requests(receiver, "connect")
    assert len(connect) == 1
    assert connect[0]["auth"] == {"session": "s-1"}
    assert connect[0]["headers"]["Cookie"] == "app_session=abc" and "X-Internal" not in connect[0]["headers"]
    assert set(connect[0]["headers"]) <= {"Cookie", "Authorization", "Origin", "User-Agent", "X-Forwarded-For"}

    assert client.call("subscribe", {"channel": team})["ok"]  # granted by the identity: the hook is not asked
    assert _requests(receiver, "subscribe") == []
    assert client.call("subscribe", {"channel": other})["ok"]
    refused = client.call("subscribe", {"channel": secret})
    assert refused["ok"] is False and refused["error"]["code"] == "forbidden"
    assert [r["channel"] for r in _requests(receiver, "subscribe")] == [other, secret]
    assert _requests(receiver, "subscribe")[0]["sub"] == "gus"
    published = client.call("publish", {"channel": team, "event": "hello", "data": 1})
    assert published["ok"], published

    # The answers are cached per (sub, channel): a second connection of gus does not ask again.
    second = _connect(server, {"session": "s-2"})
    assert second.call("subscribe", {"channel": other})["ok"]
    assert second.call("subscribe", {"channel": secret})["ok"] is False
    assert len(_requests(receiver, "subscribe")) == 2
    # A refreshed token (same sub) keeps what the hook granted beyond it, and drops what neither grants.
    refreshed = client.call("refresh_token", {"token": Api(server).token("gus", [])})
    assert refreshed["ok"] and refreshed["dropped"] == [team], refreshed
    # A token still works as before, without asking the hook.
    token = Api(server).token("hal", [team])
    with_token = _connect(server, {"token": token})
    assert len(_requests(receiver, "connect")) == 2
    for c in (client, second, with_token):
        c.disconnect()
    assert not server.bad_log_lines()


def test_the_hook_refuses_with_its_message_and_an_unreachable_or_slow_hook_refuses_quickly(server_factory, receiver):
    server = server_factory(**_hook_env(receiver.url + "/auth"))
    receiver.control(auth={"connect": {"status": 401, "body": {"message": "your session has ended"}}})
    error, _ = _refusal(server, {"session": "old"})
    assert error["message"] == "your session has ended" and error["data"]["code"] == "unauthorized"

    receiver.control(auth={"connect": {"status": 200, "body": {"sub": "ida"}, "delay": 3}})
    error, took = _refusal(server, {})
    assert error["data"]["code"] == "unavailable", error
    assert took < 2.0, f"a slow hook held the connect for {took:.1f}s (AUTH_HOOK_TIMEOUT_MS is 500)"

    receiver.control(auth={"connect": {"status": 200, "body": {"sub": "ida", "channels": "not a list"}}})
    error, _ = _refusal(server, {})
    assert error["data"]["code"] == "unavailable"

    nobody = server_factory(**_hook_env(f"http://127.0.0.1:{free_port()}/auth"))
    error, took = _refusal(nobody, {})
    assert error["data"]["code"] == "unavailable" and took < 2.0
    assert server.readyz()["status"] == "ready" and nobody.readyz()["status"] == "ready"


def test_the_hook_answers_the_expiry_warning(server_factory, receiver):
    server = server_factory(**_hook_env(receiver.url + "/auth"))
    room = unique("room")
    receiver.control(auth={
        "connect": {"status": 200, "body": {"sub": "jo", "channels": [room], "exp": int(time.time()) + 3}},
        "refresh": {"status": 200, "body": {"sub": "jo", "channels": [room], "exp": int(time.time()) + 600}},
    })
    client = _connect(server, {})
    assert client.call("subscribe", {"channel": room})["ok"]
    time.sleep(4.5)  # past the first exp
    assert client.sio.connected, "the connection ended although the hook extended it"
    assert [r["sub"] for r in _requests(receiver, "refresh")] == ["jo"]
    assert not [d for d in client.deliveries() if d.event.startswith("signalboard:token_")]
    assert client.call("publish", {"channel": room, "event": "x", "data": 1})["ok"] is False  # no publish grant
    client.disconnect()
