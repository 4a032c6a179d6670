"""SSE streams on several real instances sharing a real redis-server, behind real nginx (deploy/nginx.conf):
delivery from the same Redis fan-out as websockets, and Last-Event-ID recovery on another instance."""

from __future__ import annotations

import os

import pytest

from tests.hub.realtime_client import Api, HubClient, unique
from tests.scale.processes import running_instances
from tests.server import ServerProcess
from tests.sse_client import SseStream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def instances(redis_server):
    env = {"REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": f"sse{os.getpid()}", "API_RATE_LIMIT": 0,
           "CLIENT_RATE_LIMIT": 0, "HISTORY_MAX_MESSAGES": 500, "GUNICORN_TIMEOUT": 120}
    with running_instances([ServerProcess(INSTANCE_ID=f"web-{n}", **env) for n in range(2)]) as servers:
        yield servers


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_streams_and_websockets_on_every_instance_get_each_message_once_in_order(instances):
    api = Api(instances[0])
    channel = unique("orders")
    token = api.token("alice", [channel])
    streams = [SseStream(server.url, {"channel": channel}, bearer(token)) for server in instances]
    client = HubClient(instances[1].url).connect({"token": token})
    try:
        for stream in streams:
            stream.wait_event("signalboard:subscribed")
        assert client.call("subscribe", {"channel": channel})["ok"]
        count = 100
        for n in range(count):
            Api(instances[n % 2]).publish(channel, "tick", {"n": n})  # publishes on both instances
        expected = list(range(1, count + 1))
        for stream in streams:
            assert stream.wait_offsets(channel, count, timeout=20) == expected
        assert client.wait_offsets(channel, count, timeout=20) == expected
    finally:
        for stream in streams:
            stream.close()
        client.disconnect()


def test_last_event_id_recovers_on_another_instance_behind_nginx(instances, nginx_factory):
    proxy = nginx_factory([server.port for server in instances])
    api = Api(instances[0])
    channel = unique("orders")
    # Which instance nginx sends this client to (ip_hash: every test client is 127.0.0.1), so the first stream can
    # be on the other one.
    probe = SseStream(proxy.url, {"channel": channel}, bearer(api.token("probe", [channel])))
    probe.wait_event("signalboard:subscribed")
    behind = api.get("/users/probe").json()["connections"][0]["instance"]
    probe.close()
    other = next(server for server in instances if server.env["INSTANCE_ID"] != behind)
    token = api.token("bob", [channel])
    first = SseStream(other.url, {"channel": channel}, bearer(token))
    first.wait_event("signalboard:subscribed")
    for n in range(3):
        api.publish(channel, "tick", n)
    assert first.wait_offsets(channel, 3) == [1, 2, 3]
    last = first.last_id()
    first.close()  # dropped
    for n in range(3, 8):
        Api(instances[1]).publish(channel, "tick", n)
    again = SseStream(proxy.url, {"channel": channel}, {**bearer(token), "Last-Event-ID": last})
    try:
        assert again.wait_event("signalboard:subscribed").data["channels"][0]["recovered"] is True
        api.publish(channel, "tick", "live")
        assert again.wait_offsets(channel, 6, timeout=15) == [4, 5, 6, 7, 8, 9]
        assert again.response.headers["Content-Type"].startswith("text/event-stream")
        assert api.get("/users/bob").json()["connections"][0]["instance"] == behind != other.env["INSTANCE_ID"]
    finally:
        again.close()


def test_a_revocation_sent_to_one_instance_ends_the_stream_on_another(instances):
    api = Api(instances[0])
    channel = unique("orders")
    token = api.token("carl", [channel])
    stream = SseStream(instances[1].url, {"channel": channel}, bearer(token))
    try:
        stream.wait_event("signalboard:subscribed")
        answer = api.post("/tokens/revoke", {"sub": "carl"}).json()
        assert answer["disconnected"] == 1
        assert stream.ended.wait(10)
        assert stream.of("signalboard:token_revoked")
    finally:
        stream.close()
