"""Several real instances (start.sh + gunicorn) sharing a real redis-server, with real nginx in front (issue 6)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import redis
import requests
import socketio

from hub.external import ExternalPublisher
from tests.hub.realtime_client import Api, HubClient, unique
from tests.scale.processes import ROOT, running_instances
from tests.server import TEST_ENV, ServerProcess

pytestmark = [pytest.mark.scale, pytest.mark.integration]

PRESENCE_TTL = 3


@pytest.fixture(scope="module")
def cluster_env(redis_server):
    return {
        "REDIS_URL": redis_server.url,
        "REDIS_KEY_PREFIX": f"scale{os.getpid()}",
        "PRESENCE_TTL": PRESENCE_TTL,
        "API_RATE_LIMIT": 0,
        "CLIENT_RATE_LIMIT": 0,
        "HISTORY_MAX_MESSAGES": 500,
        # The machine these run on is shared and at times starved of CPU; a worker must not be killed for a
        # late gunicorn heartbeat in the middle of a test.
        "GUNICORN_TIMEOUT": 120,
    }


@pytest.fixture(scope="module")
def instances(cluster_env):
    with running_instances([ServerProcess(INSTANCE_ID=f"web-{n}", **cluster_env) for n in range(3)]) as servers:
        yield servers


@pytest.fixture
def connect(instances):
    clients: list[HubClient] = []
    api = Api(instances[0])

    def open_client(url: str, sub: str = "alice", channels: list[str] | None = None) -> HubClient:
        client = HubClient(url)
        clients.append(client)
        return client.connect({"token": api.token(sub, channels or ["**"])})

    yield open_client
    for client in clients:
        client.disconnect()


def subscribe(client: HubClient, channel: str, **extra) -> dict:
    ack = client.call("subscribe", {"channel": channel, **extra})
    assert ack["ok"] is True, ack
    return ack


def test_a_message_published_anywhere_reaches_every_instance_exactly_once(instances, connect, cluster_env):
    a, b, c = instances
    channel = unique("orders")
    on_a, on_b = connect(a.url), connect(b.url)
    subscribe(on_a, channel)
    subscribe(on_b, channel)

    via_b = Api(b).publish(channel, "created", {"via": "http-b"})
    with ExternalPublisher(cluster_env["REDIS_URL"], key_prefix=cluster_env["REDIS_KEY_PREFIX"]) as publisher:
        via_helper = publisher.publish(channel, "created", {"via": "helper"})
    cli = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "flask"), "--app", "app", "publish", channel, "created", '{"via": "cli"}'],
        cwd=ROOT, env={**os.environ, **TEST_ENV, **{k: str(v) for k, v in cluster_env.items()}},
        capture_output=True, text=True, timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    via_cli = json.loads(cli.stdout.strip().splitlines()[-1])
    via_c = Api(c).publish(channel, "created", {"via": "http-c"})

    assert [via_b["offset"], via_helper.offset, via_cli["offset"], via_c["offset"]] == [1, 2, 3, 4]
    for client in (on_a, on_b):
        assert client.wait_offsets(channel, 4, timeout=30) == [1, 2, 3, 4]
        assert [d.data["via"] for d in client.deliveries(channel)] == ["http-b", "helper", "cli", "http-c"]
        assert [d.meta["id"] for d in client.deliveries(channel)] == [
            via_b["id"], via_helper.id, via_cli["id"], via_c["id"]]
    time.sleep(0.5)  # a duplicate would have arrived by now
    assert on_a.offsets(channel) == [1, 2, 3, 4] and on_b.offsets(channel) == [1, 2, 3, 4]


def test_cli_publish_reports_bad_input_and_missing_redis(cluster_env):
    env = {**os.environ, **TEST_ENV, **{k: str(v) for k, v in cluster_env.items()}}
    flask = str(ROOT / ".venv" / "bin" / "flask")
    bad = subprocess.run([flask, "--app", "app", "publish", "bad channel!", "e", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and json.loads(bad.stderr.strip().splitlines()[-1])["error"]["code"] == "invalid_channel"
    no_redis = subprocess.run([flask, "--app", "app", "publish", "ch", "e", "1"],
                              cwd=ROOT, env={**env, "REDIS_URL": ""}, capture_output=True, text=True, timeout=60)
    assert no_redis.returncode == 1
    assert json.loads(no_redis.stderr.strip().splitlines()[-1])["error"]["code"] == "unavailable"
    assert "Traceback" not in bad.stderr + no_redis.stderr


def test_concurrent_publishers_on_every_instance_get_strictly_increasing_offsets(instances, connect):
    channel = unique("ticks")
    listener = connect(instances[1].url)
    subscribe(listener, channel)
    acked: list[int] = []
    lock = threading.Lock()

    def publish(server: ServerProcess) -> None:
        api = Api(server)
        for n in range(40):
            offset = api.publish(channel, "tick", {"n": n})["offset"]
            with lock:
                acked.append(offset)

    threads = [threading.Thread(target=publish, args=(server,)) for server in instances for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(acked) == list(range(1, 241))
    # Delivery follows the offsets even though three processes published at once.
    assert listener.wait_offsets(channel, 240, timeout=30) == list(range(1, 241))


def test_recovery_with_since_on_a_different_instance(instances, connect):
    a, b, c = instances
    channel = unique("recover")
    first = connect(a.url)
    ack = subscribe(first, channel)
    publisher = Api(b)
    for n in range(3):
        publisher.publish(channel, "step", {"n": n})
    assert first.wait_offsets(channel, 3) == [1, 2, 3]
    epoch = ack["epoch"]
    first.disconnect()
    for n in range(3, 8):
        publisher.publish(channel, "step", {"n": n})

    again = connect(c.url)
    ack = subscribe(again, channel, since=3, epoch=epoch)
    assert ack["recovered"] is True and ack["offset"] == 8
    publisher.publish(channel, "step", {"n": 8})
    assert again.wait_offsets(channel, 6) == [4, 5, 6, 7, 8, 9]
    assert [d.data["n"] for d in again.deliveries(channel)] == [3, 4, 5, 6, 7, 8]
    # The replayed messages came before the subscribe ack, the live one after it.
    kinds = [type(entry).__name__ for entry in again.log]
    assert kinds.index("Ack") == 5


def test_recovery_races_with_publishers_on_other_instances(instances, connect):
    """Subscribing with `since` while two other instances publish: no gap, no duplicate, in order."""
    a, b, c = instances
    channel = unique("race")
    stop = threading.Event()
    published: list[int] = []

    def publish(server: ServerProcess) -> None:
        api = Api(server)
        while not stop.is_set():
            published.append(api.publish(channel, "tick", None)["offset"])

    threads = [threading.Thread(target=publish, args=(server,)) for server in (b, c)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        clients = []
        for since in (0, 5, 10):
            client = connect(a.url)
            ack = subscribe(client, channel, since=since)
            clients.append((client, since, ack))
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    last = max(published)
    for client, since, ack in clients:
        assert ack["recovered"] is True
        offsets = client.wait_offsets(channel, last - since, timeout=20)
        assert offsets == list(range(since + 1, last + 1))


def test_polling_and_websocket_clients_through_nginx(instances, nginx_factory):
    a, b, _ = instances
    proxy = nginx_factory([a.port, b.port])
    channel = unique("via-nginx")
    token = Api(a).token("nginx-user", ["**"])
    received: dict[str, list] = {"polling": [], "websocket": []}
    clients = []
    for transport in ("polling", "websocket"):
        client = socketio.Client(reconnection=False)
        client.on("note", lambda data, meta, t=transport: received[t].append(meta["offset"]))
        client.connect(proxy.url, auth={"token": token}, transports=[transport], wait_timeout=10)
        assert client.transport() == transport
        ack = client.call("subscribe", {"channel": channel}, timeout=10)
        assert ack["ok"] is True, ack
        clients.append(client)
    try:
        # HTTP through nginx too, and straight to each instance.
        assert requests.get(proxy.url + "/readyz", timeout=5).status_code == 200
        Api(proxy).publish(channel, "note", 1)
        Api(a).publish(channel, "note", 2)
        Api(b).publish(channel, "note", 3)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(len(v) < 3 for v in received.values()):
            time.sleep(0.05)
        assert received == {"polling": [1, 2, 3], "websocket": [1, 2, 3]}
    finally:
        for client in clients:
            client.disconnect()
    assert "[error]" not in proxy.error_log(), proxy.error_log()


def presence(server: ServerProcess, channel: str) -> dict:
    response = Api(server).get(f"/channels/{channel}/presence")
    assert response.status_code == 200, response.text
    return response.json()


def test_presence_spans_instances_and_forgets_a_killed_one(instances, cluster_env, connect):
    a, b, _ = instances
    channel = unique("presence")
    doomed = ServerProcess(INSTANCE_ID="doomed", **cluster_env).start(timeout=60)
    try:
        on_a = connect(a.url, sub="alice")
        subscribe(on_a, channel, presence=True)
        for sub in ("bob", "carol"):
            subscribe(connect(doomed.url, sub=sub), channel)
        subscribe(connect(b.url, sub="bob"), channel)
        seen = presence(b, channel)
        assert seen["connections"] == 4
        assert {s["sub"]: s["connections"] for s in seen["subscribers"]} == {"alice": 1, "bob": 2, "carol": 1}
        counts = {c["channel"]: c["subscribers"] for c in Api(a).get("/channels").json()["channels"]}
        assert counts[channel] == 4

        os.kill(doomed.worker_pid(), signal.SIGKILL)
        os.kill(doomed.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        a.wait_until(lambda: presence(a, channel)["connections"] == 2, timeout=PRESENCE_TTL + 10,
                     what="the killed instance's connections to leave presence")
        assert time.monotonic() - killed_at >= PRESENCE_TTL - 1.5  # not before the TTL: a pause is not a crash
        assert {s["sub"]: s["connections"] for s in presence(b, channel)["subscribers"]} == {"alice": 1, "bob": 1}
        # carol's last connection went with the instance: presence listeners were told she left.
        on_a.wait_for(lambda: any(d.event == "signalboard:presence" and d.data.get("sub") == "carol"
                                  and d.data.get("action") == "leave" for d in on_a.deliveries()),
                      timeout=10, what="carol's leave event")
    finally:
        doomed.__exit__(None, None, None)


def test_listener_recovers_when_redis_drops_its_connection(instances, connect, redis_server):
    """The failure python-socketio's stock manager can miss: Redis closes the subscriber's connection."""
    a, b, _ = instances
    channel = unique("dropped")
    listener = connect(a.url)
    subscribe(listener, channel)
    admin = redis.Redis.from_url(redis_server.url)
    killed = admin.client_kill_filter(_type="pubsub")
    assert killed >= 3  # one subscriber connection per instance
    # Published while the listeners reconnect: caught up from history, not lost.
    offsets = [Api(b).publish(channel, "after-kill", n)["offset"] for n in range(5)]
    assert listener.wait_offsets(channel, 5, timeout=20) == offsets
    for server in instances:
        server.wait_until(lambda s=server: requests.get(s.url + "/readyz", timeout=5).status_code == 200,
                          timeout=20, what="readiness after the reconnect")
    admin.close()


def test_channel_rooms_match_the_realtime_transport():
    from blueprints.realtime.delivery import channel_room
    from hub.redis_history import CHANNEL_ROOM_PREFIX

    assert channel_room("orders.eu") == CHANNEL_ROOM_PREFIX + "orders.eu"
