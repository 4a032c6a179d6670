"""The compose `ha` profile really run: the Redis master container killed under a steady publisher through nginx-ha.

Master and replica watched by three Sentinels, two instances on the sentinel URL, nginx-ha in front (README
"Redis failover", docs/scale.md). The daemon, base image and stack helpers are shared with test_docker.py
(tests/ops/conftest.py, docker_stack.py); SIGNALBOARD_SKIP_DOCKER=1 skips it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.hub.realtime_client import Api, HubClient, unique
from tests.ops.docker_stack import MARKS, DockerBase, Stack, run
from tests.scale.failover import Publisher, ReadyzWatcher, check_delivery, record
from tests.scale.processes import wait_until
from tests.server import bad_lines, free_port

pytestmark = MARKS

PROJECT = "signalboard-test-ha"
SERVERS = ["redis-primary", "redis-replica"]
SENTINELS = ["sentinel-1", "sentinel-2", "sentinel-3"]
INSTANCES = ["web-ha-1", "web-ha-2"]
SERVICES = [*SERVERS, *SENTINELS, *INSTANCES, "nginx-ha"]  # not the default stack's web and proxy
API_KEY = "test-api-key-1-0123456789"  # the key tests.hub.realtime_client.Api sends
# Inside an instance's container (no curl in the image): GET a URL of its own with the API key, print the body.
GET_INSIDE = ("import sys, urllib.request; r = urllib.request.Request(sys.argv[1], headers={'Authorization': "
              "'Bearer ' + sys.argv[2]}); print(urllib.request.urlopen(r, timeout=8).read().decode())")


@dataclass(frozen=True)
class Endpoint:
    url: str


@pytest.fixture(scope="module")
def ha(docker_base: DockerBase) -> Iterator[Stack]:
    stack = docker_base.stack(PROJECT, "ha", SIGNALBOARD_HA_PORT=str(free_port()), API_KEYS=API_KEY)
    # One build per image: web-ha-2 and redis-replica use the images web-ha-1 and redis-primary build.
    with stack.running(SERVICES, build=["web-ha-1", "redis-primary", "nginx-ha"]):
        yield stack


def sentinel_master(sentinel: str) -> str:
    """The master's address as the Sentinel in container `sentinel` names it to clients."""
    answer = run(["docker", "exec", sentinel, "redis-cli", "-p", "26379", "sentinel", "get-master-addr-by-name",
                  "signalboard"], timeout=30).stdout.split()
    assert len(answer) == 2, answer
    return answer[0]


def role(container: str) -> dict[str, str]:
    lines = run(["docker", "exec", container, "redis-cli", "info", "replication"], timeout=30).stdout.splitlines()
    return dict(line.strip().split(":", 1) for line in lines if ":" in line)


def config_file(container: str) -> str:
    return run(["docker", "exec", container, "cat", "/data/redis.conf"], timeout=30).stdout


def inside(stack: Stack, instance: str, path: str) -> dict:
    """GET `path` from the instance itself (bypassing nginx, whose ip_hash sends every test request to one)."""
    command = ["docker", "exec", stack.container(instance), "python", "-c", GET_INSIDE,
               "http://127.0.0.1:5000" + path, API_KEY]
    return json.loads(run(command, timeout=30).stdout)


def test_master_container_killed_loses_no_acknowledged_publish(ha: Stack) -> None:
    """`docker kill` the master the Sentinels name: they promote the replica; publishes are refused (503) until the
    killed container, started again, rejoins as the new master's replica; then every publish acknowledged before
    and after is in both instances' history with its offset, and the subscriber through nginx-ha got them."""
    nginx = Endpoint(f"http://127.0.0.1:{ha.port('SIGNALBOARD_HA_PORT')}")
    containers = {service: ha.container(service) for service in SERVERS + SENTINELS}
    sentinel = containers["sentinel-1"]
    channel = unique("ha")
    client = HubClient(nginx.url).connect({"token": Api(nginx).token("watcher", ["**"])})
    watcher = ReadyzWatcher([nginx]).start()
    publisher = Publisher([nginx], channel, interval=0.1)  # ~10/s: the whole run stays inside the history bound
    try:
        epoch = client.call("subscribe", {"channel": channel})["epoch"]
        publisher.start()
        wait_until(lambda: len(publisher.acked) >= 20, 60, "publishing through nginx-ha")
        old = sentinel_master(sentinel)
        # Named, not an IP: the servers announce their service names (replica-announce-ip).
        assert old in SERVERS, old
        new = next(server for server in SERVERS if server != old)
        run(["docker", "kill", containers[old]], timeout=60)
        killed = time.monotonic()
        wait_until(lambda: sentinel_master(sentinel) == new, 60, f"the Sentinels to promote {new}")
        promoted = time.monotonic()
        run(["docker", "start", containers[old]], timeout=60)  # the host is back: it must rejoin as a replica
        wait_until(lambda: publisher.acked_since(killed) >= 1, 90, "publishing to be acknowledged again")
        resumed = min(at for at in publisher.acked_at if at > killed)
        wait_until(lambda: publisher.acked_since(resumed) >= 20, 60, "20 publishes after the failover")
        wait_until(lambda: any(w[2] == 200 and w[0] > resumed for w in watcher.seen), 30, "/readyz ready again")
    finally:
        publisher.close()
        watcher.close()
    # The Sentinels agree, and the old master follows the new one by name, whatever IP it came back with.
    assert {sentinel_master(containers[s]) for s in SENTINELS} == {new}
    rejoined = role(containers[old])
    assert rejoined["role"] == "slave" and rejoined["master_host"] == new, rejoined
    assert rejoined["master_link_status"] == "up", rejoined
    # And both roles are in the servers' own config files (the Sentinels' CONFIG REWRITE), so a restart keeps them.
    assert f"replicaof {new} 6379" in config_file(containers[old])
    assert "replicaof" not in config_file(containers[new])

    refused = [r for r in publisher.refused if r[0] > killed]
    # 503 from the instance (Redis gone, or no replica confirms), or a read cut at the moment of the kill.
    assert all(code == "unavailable" or status == 0 for _, status, code in refused), refused[:5]
    assert publisher.slowest < 5.0, publisher.slowest  # no request waited long on a dead master
    acked = [(offset, mid) for offset, mid, _ in publisher.acked]
    assert [offset for offset, _ in acked] == sorted({offset for offset, _ in acked}), "an offset handed out twice"
    assert any(at < killed for at in publisher.acked_at) and publisher.acked_since(resumed) >= 20

    # Every acknowledged publish, before and after the kill, in the history both instances serve, with its offset.
    for instance in INSTANCES:
        page = inside(ha, instance, f"/api/v1/channels/{channel}/history?since=0&limit=1000")
        served = {(m["offset"], m["id"]) for m in page["messages"]}
        missing = [a for a in acked if a not in served]
        assert not missing, f"{instance} lacks {len(missing)} acknowledged publishes, first {missing[:3]}"
        assert inside(ha, instance, "/readyz")["status"] == "ready"

    # The subscriber through nginx-ha got them all once and in order, or was told to resync where the epoch changed.
    changed = check_delivery(client, nginx, channel, publisher, epoch)
    client.disconnect()

    # /readyz through nginx-ha said "failing over" while the master was gone, and ready after.
    during = [w[3] for w in watcher.seen if killed < w[0] < promoted and w[2] == 503]
    assert any(reason.startswith("failing over") for reason in during), watcher.seen[-5:]
    assert watcher.seen[-1][2] == 200, watcher.seen[-1]
    for instance in INSTANCES:  # both instances noticed the failover, once, and logged nothing worse
        log = ha.compose("logs", "--no-color", instance, timeout=60).stdout
        assert "redis unreachable (failing over?)" in log, log[-3000:]
        assert bad_lines(log) == [], log[-3000:]
    record({"test": "docker-ha-kill-master", "promoted_after_s": round(promoted - killed, 2),
            "publishing_resumed_after_s": round(resumed - killed, 2),
            "resumed_after_restart_s": round(resumed - promoted, 2), "refused_during_failover": len(refused),
            "acknowledged": len(acked), "epoch_changed": changed, "slowest_request_s": round(publisher.slowest, 2)})
