"""Redis behind Sentinel (redis+sentinel:// URLs): every Redis use follows the master, through a failover too."""

from __future__ import annotations

import pytest
import requests

from tests.hub.realtime_client import Api, HubClient, unique
from tests.scale.processes import SentinelCluster, redis_cli, running_instances
from tests.server import ServerProcess

pytestmark = [pytest.mark.scale, pytest.mark.integration]


@pytest.fixture
def cluster():
    started = SentinelCluster()
    try:
        yield started.start()
    finally:
        started.close()


def instance_env(cluster: SentinelCluster, key_prefix: str) -> dict:
    return {"REDIS_URL": cluster.url, "REDIS_KEY_PREFIX": key_prefix, "API_RATE_LIMIT": 0, "CLIENT_RATE_LIMIT": 0,
            "PRESENCE_TTL": 3, "GUNICORN_TIMEOUT": 120}


def test_every_redis_use_goes_through_the_sentinels(cluster, key_prefix):
    """Queue, history, presence, control and revocations all reach the master the Sentinels name."""
    env = instance_env(cluster, key_prefix)
    with running_instances([ServerProcess(INSTANCE_ID="a", **env), ServerProcess(INSTANCE_ID="b", **env)]) as (a, b):
        channel = unique("sentinel")
        token = Api(a).token("watcher", ["**"])
        watcher = HubClient(b.url).connect({"token": token})
        try:
            assert watcher.call("subscribe", {"channel": channel, "presence": True})["ok"] is True
            sent = Api(a).publish(channel, "tick", {"n": 1})
            assert watcher.wait_offsets(channel, 1) == [sent["offset"]]
            page = Api(b).get("/channels/" + channel + "/history").json()
            assert [m["offset"] for m in page["messages"]] == [sent["offset"]]
            user = Api(a).get("/users/watcher").json()  # control bus: b answers a's question through Redis
            assert len(user["connections"]) == 1, user
            revoked = Api(a).post("/tokens/revoke", {"sub": "watcher"})
            assert revoked.status_code == 200, revoked.text
            watcher.wait_for(lambda: not watcher.sio.connected, timeout=10, what="the revoked holder to be dropped")
            refused = HubClient(a.url).try_connect({"token": token})
            assert refused is not None
            keys = cluster_keys(cluster, key_prefix)
            assert f"{key_prefix}:offsets" in keys and any(k.startswith(f"{key_prefix}:revoked:") for k in keys)
            assert requests.get(a.url + "/readyz", timeout=5).json()["status"] == "ready"
        finally:
            watcher.disconnect()


def cluster_keys(cluster: SentinelCluster, prefix: str) -> list[str]:
    return redis_cli(cluster.master_port(), "KEYS", prefix + ":*").split()
