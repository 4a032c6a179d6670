"""Redis behind Sentinel (redis+sentinel:// URLs): every Redis use follows the master, through a failover too."""

from __future__ import annotations

import time

import pytest
import requests

from tests.hub.realtime_client import Api, HubClient, unique
from tests.scale.failover import Publisher, ReadyzWatcher, check_delivery, record, resyncs
from tests.scale.processes import SentinelCluster, redis_cli, running_instances, wait_until
from tests.server import ServerProcess
from tests.sse_client import SseStream

pytestmark = [pytest.mark.scale, pytest.mark.integration]


def instance_env(cluster: SentinelCluster, key_prefix: str) -> dict:
    return {"REDIS_URL": cluster.url, "REDIS_KEY_PREFIX": key_prefix, "API_RATE_LIMIT": 0, "CLIENT_RATE_LIMIT": 0,
            "PRESENCE_TTL": 3, "REDIS_REPLICA_TIMEOUT_MS": 500,
            "GUNICORN_TIMEOUT": 120}  # a CPU-starved shared machine must not get a worker killed mid-test


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


@pytest.mark.parametrize("cluster, old_master_back", [(2, False), (1, True)], indirect=["cluster"],
                         ids=["two-replicas", "old-master-back-as-replica"])
def test_master_killed_mid_stream_loses_no_acknowledged_publish(cluster, key_prefix, old_master_back):
    """SIGKILL the master under a steady publisher: the Sentinels promote a replica, both instances follow it, and
    every acknowledged publish reaches the subscribers on both instances once and in order.

    With two replicas the other one confirms publishes once it follows the new master; with one, publishes are
    refused (no replica to confirm them) until the old master is back as a replica of the new one."""
    env = instance_env(cluster, key_prefix)
    servers = [ServerProcess(INSTANCE_ID="a", **env), ServerProcess(INSTANCE_ID="b", **env)]
    with running_instances(servers) as (a, b):
        channel = unique("failover")
        token = Api(a).token("watcher", ["**"])
        clients = [HubClient(server.url).connect({"token": token}) for server in (a, b)]
        watcher = ReadyzWatcher([a, b]).start()
        publisher = Publisher([a, b], channel)
        try:
            epoch = [client.call("subscribe", {"channel": channel}) for client in clients][0]["epoch"]
            publisher.start()
            wait_until(lambda: len(publisher.acked) >= 30, 30, "publishing to start")
            steady = publisher.acked_at[-20:]
            old = cluster.master
            old.kill()
            killed = time.monotonic()
            wait_until(lambda: cluster.master_port() != old.port, 30, "the Sentinels to promote a replica")
            promoted = time.monotonic()
            if old_master_back:
                old.start()  # empty (no persistence): the Sentinels turn it into a replica of the new master
            wait_until(lambda: publisher.acked_since(killed) >= 1, 30, "publishing to succeed again")
            resumed = min(at for at in publisher.acked_at if at > killed)
            wait_until(lambda: publisher.acked_since(killed) >= 30, 30, "30 publishes after the failover")
            wait_until(lambda: all(w[2] == 200 for w in watcher.seen[-2:]), 20, "both instances ready again")
        finally:
            publisher.close()
            watcher.close()
        assert resumed - killed < 30
        refused = [r for r in publisher.refused if r[0] > killed]
        assert all(status == 503 and code == "unavailable" for _, status, code in publisher.refused), \
            publisher.refused[:5]
        assert publisher.slowest < 5.0, publisher.slowest  # no request waited on a dead master
        offsets = [offset for offset, _, _ in publisher.acked]
        assert offsets == sorted(set(offsets)), "an acknowledged offset was handed out twice"
        changed = [check_delivery(client, server, channel, publisher, epoch)
                   for client, server in zip(clients, (a, b), strict=True)]
        assert len(set(changed)) == 1
        for index in (0, 1):
            reasons = [w[3] for w in watcher.seen if w[1] == index and w[2] == 503]
            assert any(reason.startswith("failing over") for reason in reasons), reasons[:5]
        for client in clients:
            client.disconnect()
        for server in (a, b):
            log = server.log()
            assert server.bad_log_lines() == [], log[-3000:]
            # One warning per listener for the failover, not one per retry.
            for who in ("message queue listener lost redis", "control listener lost redis"):
                assert 1 <= log.count(who) <= 2, [line for line in log.splitlines() if who in line]
        gaps = [later - earlier for earlier, later in zip(steady, steady[1:], strict=False)]
        record({"test": "kill-master", "old_master_back": old_master_back, "replicas": cluster.replica_count,
                "promoted_after_s": round(promoted - killed, 2),
                "publishing_resumed_after_s": round(resumed - killed, 2),
                "refused_during_failover": len(refused), "acknowledged": len(publisher.acked),
                "epoch_changed": changed[0], "slowest_request_s": round(publisher.slowest, 2),
                "steady_publish_interval_ms": round(1000 * sorted(gaps)[len(gaps) // 2], 1)})


def test_failover_to_a_replica_behind_changes_the_epoch_and_never_reuses_an_offset(cluster, key_prefix):
    """The replica hangs (SIGSTOP, its link cut) while publishes go on: they are delivered live but refused (no
    replica confirms them). The master is killed, the stale replica promoted: those offsets are gone from Redis.
    Publishing on must count on above them under a new epoch, and subscribers are told to resync."""
    env = instance_env(cluster, key_prefix)
    servers = [ServerProcess(INSTANCE_ID="a", **env), ServerProcess(INSTANCE_ID="b", **env)]
    with running_instances(servers) as (a, b):
        channel = unique("lossy")
        token = Api(a).token("watcher", ["**"])
        clients = [HubClient(server.url).connect({"token": token}) for server in (a, b)]
        stream = SseStream(b.url, {"channel": channel}, {"Authorization": f"Bearer {token}"})
        publisher = Publisher([a, b], channel)
        deadline = time.monotonic() + 120
        epoch = [client.call("subscribe", {"channel": channel}) for client in clients][0]["epoch"]
        stream.wait_event("signalboard:subscribed")
        for n in range(10):
            assert publisher.publish(f"m{n}", n, deadline, rotate=n) is not None
        old, [replica] = cluster.master, cluster.replicas
        replica.pause()
        # Its replication connection cut while it hangs: nothing written from now on reaches it, even buffered.
        redis_cli(old.port, "CLIENT", "KILL", "TYPE", "replica")
        lost = []
        for n in range(3):
            refused = Api(a).post("/publish", {"channel": channel, "event": "tick", "data": n,
                                               "idempotency_key": f"l{n}"})
            assert refused.status_code == 503 and "replica" in refused.json()["error"]["message"], refused.text
        for client in clients:  # delivered live all the same: Redis broadcast them before the replica wait
            lost = client.wait_offsets(channel, 13)[10:]
        assert lost == [11, 12, 13]
        old.kill()
        replica.resume()
        wait_until(lambda: cluster.master_port() == replica.port, 30, "the stale replica to be promoted")
        old.start()  # back as a replica of the promoted one, so publishes can be confirmed again
        retried = [publisher.publish(f"l{n}", n, deadline, rotate=n) for n in range(3)]
        assert all(answer is not None for answer in retried)
        # Above what subscribers saw (11-13): no reuse. Usually 14-16; higher when an attempt landed on the old master
        # restarted empty (a Sentinel still naming it) and was lost with it in turn: numbering continues above that.
        offsets = [answer["offset"] for answer in retried]
        assert offsets == sorted(set(offsets)) and offsets[0] >= 14, offsets
        # New messages (the keys' records were lost with them); a retry may answer `duplicate` for an attempt that
        # was stored on the new master before a replica could confirm it.
        lost_ids = {d.meta["id"] for d in clients[0].deliveries(channel)[10:13]}
        assert lost_ids.isdisjoint(answer["id"] for answer in retried)
        for n in range(10, 20):
            assert publisher.publish(f"m{n}", n, deadline, rotate=n) is not None
        for client in clients:
            client.wait_for(lambda c=client: resyncs(c), timeout=20, what="the resync notice")
            notice = resyncs(client)[0]
            assert notice["channel"] == channel and notice["reason"] == "history_lost" and notice["offset"] == 13
            assert notice["epoch"] != epoch
        changed = [check_delivery(client, server, channel, publisher, epoch)
                   for client, server in zip(clients, (a, b), strict=True)]
        assert changed == [True, True]
        # An SSE stream on b is told the same, and its later messages number on above the lost ones.
        notice = stream.wait_event("signalboard:resync").data
        assert notice["channel"] == channel and notice["offset"] == 13 and notice["reason"] == "history_lost"
        assert stream.offsets(channel)[:13] == list(range(1, 14)) and stream.offsets(channel)[13] > 13
        stream.close()
        for client in clients:
            client.disconnect()
        for server in (a, b):
            log = server.log()
            assert "new epoch" in log or "told to resync" in log
            assert server.bad_log_lines() == [], log[-3000:]
