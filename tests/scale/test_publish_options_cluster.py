"""Idempotent, multi-channel and echo-suppressed publishing across two real instances sharing a real redis-server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest
import redis
import requests

from hub.external import ExternalPublisher
from hub.redis_client import RedisKeys
from tests.hub.realtime_client import Api, HubClient, ok, subscribed, unique
from tests.scale.processes import ROOT
from tests.server import TEST_ENV, ServerProcess

pytestmark = [pytest.mark.scale, pytest.mark.integration]


def cluster_env(redis_server, prefix: str, **extra) -> dict:
    return {"REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": prefix, "API_RATE_LIMIT": 0, "CLIENT_RATE_LIMIT": 0,
            "GUNICORN_TIMEOUT": 120, **extra}


class Pair:
    """Two instances on one Redis, started together and ended by PID."""

    def __init__(self, env: dict) -> None:
        self.env = env
        self.servers = [ServerProcess(INSTANCE_ID=f"web-{n}", **env) for n in range(2)]

    def __enter__(self) -> list[ServerProcess]:
        try:
            for server in self.servers:
                server.start(timeout=60)
            for server in self.servers:
                server.wait_until(lambda s=server: requests.get(s.url + "/readyz", timeout=5).status_code == 200,
                                  timeout=20, what="readiness")
        except BaseException:
            self.__exit__()
            raise
        return self.servers

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def env(redis_server):
    return cluster_env(redis_server, f"pub{os.getpid()}")


@pytest.fixture(scope="module")
def instances(env):
    with Pair(env) as servers:
        yield servers
        for server in servers:
            assert server.bad_log_lines() == [], server.log()[-3000:]


@pytest.fixture
def connect(instances):
    clients: list[HubClient] = []
    api = Api(instances[0])

    def open_client(server: ServerProcess, sub: str = "alice", publish: list[str] | None = None,
                    transports: tuple[str, ...] = ("websocket",)) -> HubClient:
        client = HubClient(server.url)
        clients.append(client)
        return client.connect({"token": api.token(sub, ["**"], publish=publish)}, transports=transports)

    yield open_client
    for client in clients:
        client.disconnect()


def received(client: HubClient, channel: str) -> list:
    """What `client` got on `channel` up to the sentinel, published after the rest: delivery follows offset order on
    every instance, so a duplicate or an echo would have arrived before it."""
    client.wait_for(lambda: any(d.data == "sentinel" for d in client.deliveries(channel)), timeout=20,
                    what=f"sentinel on {channel}")
    return [d.data for d in client.deliveries(channel)]


def test_a_retry_on_the_other_instance_answers_the_first(instances, connect):
    a, b = instances
    channel = unique("idem")
    watchers = [subscribed(connect(server), channel) for server in (a, b)]
    body = {"channel": channel, "event": "e", "data": {"n": 1}, "idempotency_key": "k-1"}
    first = ok(Api(a).post("/publish", body))
    again = ok(Api(b).post("/publish", body))
    assert again == {**first, "duplicate": True}
    Api(b).publish(channel, data="sentinel")
    assert [received(w, channel) for w in watchers] == [[{"n": 1}, "sentinel"]] * 2


def test_concurrent_retries_on_two_instances_store_one_message(instances, connect):
    channel = unique("idem")
    watchers = [subscribed(connect(server), channel) for server in instances]
    answers: list[dict] = []
    start = threading.Barrier(10)

    def retry(server: ServerProcess) -> None:
        start.wait(10)
        answers.append(ok(Api(server).post("/publish", {"channel": channel, "event": "e", "data": 1,
                                                        "idempotency_key": "race"})))

    threads = [threading.Thread(target=retry, args=(instances[n % 2],)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 10 and sum("duplicate" not in answer for answer in answers) == 1
    assert len({(answer["offset"], answer["id"], answer["ts"]) for answer in answers}) == 1
    Api(instances[0]).publish(channel, data="sentinel")
    assert [received(w, channel) for w in watchers] == [[1, "sentinel"]] * 2


def test_the_same_key_on_another_channel_is_another_message(instances):
    a, b = instances
    one, two = unique("idem"), unique("idem")
    first = ok(Api(a).post("/publish", {"channel": one, "event": "e", "idempotency_key": "shared"}))
    other = ok(Api(b).post("/publish", {"channel": two, "event": "e", "idempotency_key": "shared"}))
    assert "duplicate" not in other and other["id"] != first["id"]


def send_and_cut(server: ServerProcess, body: dict) -> None:
    """POST a publish and close the connection without reading a byte of the answer, as a crashing client would."""
    payload = json.dumps(body).encode()
    head = (f"POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {TEST_ENV['API_KEYS'].split(',')[0]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(head.encode() + payload)


@pytest.mark.parametrize("wait_for_the_first", [False, True], ids=["retry-at-once", "retry-after-it-was-stored"])
def test_a_publish_cut_before_its_answer_and_retried_elsewhere_arrives_once(instances, connect, wait_for_the_first):
    a, b = instances
    channel = unique("cut")
    watchers = [subscribed(connect(server), channel) for server in (a, b, a)]
    body = {"channel": channel, "event": "e", "data": "the one", "idempotency_key": "cut-1"}
    send_and_cut(a, body)
    if wait_for_the_first:  # the first attempt certainly stored it: the retry must be the duplicate
        b.wait_until(lambda: ok(Api(b).get(f"/channels/{channel}/history"))["offset"] == 1, what="the first publish")
    retry = ok(Api(b).post("/publish", body))
    assert retry["offset"] == 1
    if wait_for_the_first:
        assert retry["duplicate"] is True
    Api(b).publish(channel, data="sentinel")
    for watcher in watchers:
        assert received(watcher, channel) == ["the one", "sentinel"]
        assert [d.meta["id"] for d in watcher.deliveries(channel)][0] == retry["id"]
    history = ok(Api(a).get(f"/channels/{channel}/history"))["messages"]
    assert [m["data"] for m in history] == ["the one", "sentinel"]


def test_the_external_publisher_and_the_cli_take_keys(instances, env):
    a, b = instances
    channel = unique("ext")
    first = ok(Api(a).post("/publish", {"channel": channel, "event": "e", "idempotency_key": "ext-1"}))
    with ExternalPublisher(env["REDIS_URL"], key_prefix=env["REDIS_KEY_PREFIX"]) as publisher:
        again = publisher.publish(channel, "e", None, idempotency_key="ext-1")
        fresh = publisher.publish(channel, "e", None, idempotency_key="ext-2")
    assert again.duplicate and again.answer() == {**first, "duplicate": True}
    assert not fresh.duplicate and fresh.offset == 2
    def flask_publish(key: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(ROOT / ".venv" / "bin" / "flask"), "--app", "app", "publish", channel, "e", "null",
             "--idempotency-key", key],
            cwd=ROOT, env={**os.environ, **TEST_ENV, **{k: str(v) for k, v in env.items()}},
            capture_output=True, text=True, timeout=60,
        )

    cli = flask_publish("ext-2")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout.strip().splitlines()[-1]) == {**fresh.answer(), "duplicate": True}
    bad = flask_publish("k" * 129)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert json.loads(bad.stderr.strip().splitlines()[-1])["error"]["code"] == "invalid_payload"
    assert ok(Api(b).get(f"/channels/{channel}/history"))["offset"] == 2


def test_several_channels_in_one_script_and_all_or_nothing(instances, connect):
    a, b = instances
    one, two = unique("multi"), unique("multi")
    Api(a).publish(two, data="before")
    watchers = [subscribed(connect(b), one), subscribed(connect(a), two)]
    body = {"channels": [one, two], "event": "e", "data": "both", "idempotency_key": "m-1"}
    answer = ok(Api(a).post("/publish", body))
    assert [(r["channel"], r["offset"]) for r in answer["results"]] == [(one, 1), (two, 2)]
    again = ok(Api(b).post("/publish", body))
    assert again == {"results": [{**r, "duplicate": True} for r in answer["results"]]}
    talker = connect(b, publish=[one])
    refused = talker.call("publish", {"channels": [one, two], "event": "e", "data": "no"})
    assert refused["ok"] is False and refused["error"]["code"] == "forbidden"
    ok(Api(b).post("/publish", {"channels": [one, two], "event": "e", "data": "sentinel"}))
    assert received(watchers[0], one) == ["both", "sentinel"]
    assert received(watchers[1], two) == ["both", "sentinel"]  # "before" came before it subscribed


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_exclusion_holds_on_every_instance(instances, connect, transport):
    a, b = instances
    channel = unique("echo")
    me = subscribed(connect(a, "me", publish=[channel], transports=(transport,)), channel)
    others = [subscribed(connect(server, "other", transports=(transport,)), channel) for server in (a, b)]
    assert me.call("publish", {"channel": channel, "event": "e", "data": "mine", "exclude_self": True})["ok"] is True
    ok(Api(b).post("/publish", {"channel": channel, "event": "e", "data": "from b", "exclude": me.sid}))
    ok(Api(b).post("/publish", {"channels": [channel], "event": "e", "data": "multi", "exclude": me.sid}))
    Api(b).publish(channel, data="sentinel")
    assert received(me, channel) == ["sentinel"]
    for other in others:
        assert received(other, channel) == ["mine", "from b", "multi", "sentinel"]
    assert ok(Api(a).get(f"/channels/{channel}/history"))["offset"] == 4


def test_a_key_is_forgotten_after_a_short_window(redis_server):
    prefix = f"win{os.getpid()}"
    with Pair(cluster_env(redis_server, prefix, IDEMPOTENCY_WINDOW_SECONDS=1)) as (a, b):
        body = {"channel": "w", "event": "e", "idempotency_key": "k"}
        first = ok(Api(a).post("/publish", body))
        record = RedisKeys(prefix).idempotency("w", "k")
        client = redis.Redis.from_url(redis_server.url)
        try:
            ttl = client.pttl(record)
            assert ttl != -1 and ttl <= 1000  # -1 would be no expiry; -2 (already gone) is fine
            time.sleep(1.2)
            assert client.exists(record) == 0  # expired in Redis: nothing stays behind
        finally:
            client.close()
        after = ok(Api(b).post("/publish", body))
        assert "duplicate" not in after and after["offset"] == first["offset"] + 1
        assert a.bad_log_lines() == [] and b.bad_log_lines() == []
