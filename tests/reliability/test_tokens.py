"""Tokens against the real server: expiry enforced while connected (warning, reason, disconnect, refresh), scope to
the granted channels, and tampered, `alg: none` and wrongly signed tokens refused."""

from __future__ import annotations

import base64
import json
import threading
import time
import warnings

import jwt
import pytest

from hub.tokens import TokenIssuer
from tests.reliability.support import Api, HubClient, reliability_server, unique
from tests.server import TEST_ENV

pytestmark = pytest.mark.integration

SECRET = TEST_ENV["SECRET_KEY"]


server = reliability_server()


@pytest.fixture(scope="module")
def api(server):
    return Api(server)


class Watched(HubClient):
    """A HubClient that also records the reason python-socketio gives for its disconnect."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gone = threading.Event()
        self.reason = None
        self.sio.on("disconnect", self._on_disconnect)

    def _on_disconnect(self, reason=None) -> None:
        self.reason = reason
        self.gone.set()

    def events(self, name: str) -> list:
        return [d.data for d in self.deliveries() if d.event == name]


def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**extra) -> dict:
    now = int(time.time())
    return {"sub": "mallory", "channels": ["**"], "publish": ["**"], "iat": now, "exp": now + 600, **extra}


def forged_tokens() -> dict[str, str]:
    good = TokenIssuer(SECRET).issue("alice", ["alice.*"], 600)
    header, payload, signature = good.split(".")
    with warnings.catch_warnings():  # PyJWT advises a 64-byte key for HS512; the point is the algorithm
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        hs512 = jwt.encode(claims(), SECRET, algorithm="HS512")
    widened = b64({**json.loads(base64.urlsafe_b64decode(payload + "==")), "channels": ["**"]})
    return {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}.",
        "alg None with the real signature": f"{b64({'alg': 'None', 'typ': 'JWT'})}.{payload}.{signature}",
        "payload widened, old signature": f"{header}.{widened}.{signature}",
        "signature of another key": jwt.encode(claims(), "another-secret-0123456789abcdef-longer", algorithm="HS256"),
        "HS512 with the right key": hs512,
        "signature stripped": f"{header}.{payload}.",
        "signature one bit off": f"{header}.{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}"
                                 f"{signature[-1]}",
        "two dots only": "..",
        "not base64": "%%%.%%%.%%%",
        "header not JSON": f"{b64(b'not json')}.{payload}.{signature}",
        "huge token (30 KB)": "a" * 30_000,
        "issued an hour in the future": jwt.encode(claims(iat=int(time.time()) + 3600), SECRET, algorithm="HS256"),
    }


@pytest.mark.parametrize("name", list(forged_tokens()))
def test_forged_tokens_are_refused_at_connect(server, name):
    refusal = HubClient(server.url).try_connect({"token": forged_tokens()[name]})
    assert refusal["data"]["code"] == "unauthorized" and refusal["data"]["reason"] == "token_invalid", refusal


def test_token_before_its_nbf_is_refused_at_connect(server):
    early = jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256")
    refusal = HubClient(server.url).try_connect({"token": early})
    assert refusal["data"]["code"] == "unauthorized" and refusal["data"]["reason"] == "token_not_yet_valid", refusal


def test_token_scoped_to_other_channels(server, api):
    mine, other = unique("scope.mine"), unique("scope.other")
    client = HubClient(server.url).connect({"token": api.token("alice", [mine], publish=[mine])})
    try:
        assert client.call("subscribe", {"channel": mine})["ok"] is True
        for event, payload in [("subscribe", {"channel": other}),
                               ("publish", {"channel": other, "event": "e", "data": 1})]:
            ack = client.call(event, payload)
            assert ack["ok"] is False and ack["error"]["code"] == "forbidden", ack
        # Patterns do not leak to siblings or parents either.
        for channel in [mine + "x", mine.rsplit(".", 1)[0], mine + ".child"]:
            assert client.call("subscribe", {"channel": channel})["error"]["code"] == "forbidden"
        assert client.call("publish", {"channel": mine, "event": "e", "data": 1})["ok"] is True
    finally:
        client.disconnect()


def test_expiry_during_a_connection_warns_then_disconnects_with_a_reason(server, api):
    channel = unique("expiry")
    client = Watched(server.url).connect({"token": api.token("carol", [channel], ttl=3)})
    assert client.call("subscribe", {"channel": channel})["ok"] is True
    assert client.gone.wait(15), "still connected long after the token expired"
    warned = client.events("signalboard:token_expiring")
    expired = client.events("signalboard:token_expired")
    assert len(warned) == 1 and warned[0]["seconds_left"] <= 2, warned
    assert len(expired) == 1 and expired[0]["reason"] == "token_expired" and expired[0]["message"], expired
    assert client.reason == "server disconnect"  # python-socketio's name for "io server disconnect": no auto-reconnect
    server.wait_until(lambda: api.get(f"/channels/{channel}/presence").json()["connections"] == 0,
                      what="the expired connection's subscription to go")


def test_refresh_keeps_the_connection_and_narrows_the_grants(server, api):
    kept, dropped = unique("refresh.kept"), unique("refresh.dropped")
    client = Watched(server.url).connect({"token": api.token("dave", [kept, dropped], ttl=3)})
    try:
        for channel in (kept, dropped):
            assert client.call("subscribe", {"channel": channel})["ok"] is True
        ack = client.call("refresh_token", {"token": api.token("dave", [kept], ttl=60)})
        assert ack["ok"] is True and ack["dropped"] == [dropped] and ack["exp"] > time.time() + 30, ack
        time.sleep(4.5)  # past the first token's expiry
        assert not client.gone.is_set() and client.events("signalboard:token_expired") == []
        offset = api.publish(kept, "e", 1)["offset"]
        api.publish(dropped, "e", 2)
        assert client.wait_offsets(kept, 1) == [offset]
        time.sleep(0.5)
        assert client.offsets(dropped) == []
        assert client.call("subscribe", {"channel": dropped})["error"]["code"] == "forbidden"
    finally:
        client.disconnect()


@pytest.mark.parametrize(
    "payload, code, reason",
    [
        ("token", "invalid_payload", None),
        ({}, "unauthorized", "token_missing"),
        ({"token": "x.y.z"}, "unauthorized", "token_invalid"),
        ({"token": "eve"}, "forbidden", None),  # replaced below by a valid token for another sub
        ({"token": "expired"}, "unauthorized", "token_expired"),
    ],
)
def test_bad_refresh_is_refused_and_changes_nothing(server, api, payload, code, reason):
    channel = unique("refresh.bad")
    client = HubClient(server.url).connect({"token": api.token("erin", [channel], ttl=60)})
    try:
        if payload == {"token": "eve"}:
            payload = {"token": api.token("eve", ["**"], ttl=60)}
        elif payload == {"token": "expired"}:
            payload = {"token": TokenIssuer(SECRET, clock=lambda: time.time() - 120).issue("erin", ["**"], 60)}
        ack = client.call("refresh_token", payload)
        assert ack["ok"] is False and ack["error"]["code"] == code, ack
        if reason:
            assert ack["error"]["reason"] == reason
        # Still the old identity: its own channel only.
        assert client.call("subscribe", {"channel": channel})["ok"] is True
        assert client.call("subscribe", {"channel": unique("elsewhere")})["error"]["code"] == "forbidden"
    finally:
        client.disconnect()

