"""Webhooks through a Redis failover (Sentinel): every event raised before and after the master is SIGKILLed is
delivered, signed, at least once: the outbox hands events to the Redis stream only once a replica has them (WAIT),
and puts again what the promoted replica lacks."""

from __future__ import annotations

import time

import pytest
import socketio

from tests.hub.realtime_client import Api, HubClient, unique
from tests.scale.failover import BackgroundLoop, record
from tests.scale.processes import SentinelCluster, redis_cli, running_instances, wait_until
from tests.server import ServerProcess
from tests.webhooks.support import Receiver, of_type, webhook_env

pytestmark = [pytest.mark.scale, pytest.mark.integration]


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.close()


def instances(cluster: SentinelCluster, receiver: Receiver, key_prefix: str) -> list[ServerProcess]:
    env = webhook_env(receiver, REDIS_URL=cluster.url, REDIS_KEY_PREFIX=key_prefix, REDIS_REPLICA_TIMEOUT_MS=500,
                      API_RATE_LIMIT=0, CLIENT_RATE_LIMIT=0, PRESENCE_TTL=3, GUNICORN_TIMEOUT=120)
    return [ServerProcess(INSTANCE_ID="a", **env), ServerProcess(INSTANCE_ID="b", **env)]


class Raiser(BackgroundLoop):
    """Raises webhook events steadily on both instances: a connection (connection.opened) that publishes once
    (message.published when acknowledged), then closes. Keeps what must reach the receiver: the sid of each
    connection that opened and the id of each acknowledged publish."""

    def __init__(self, servers: list[ServerProcess], token: str, channel: str) -> None:
        super().__init__()
        self.servers = servers
        self.token = token
        self.channel = channel
        self.opened: list[tuple[float, str]] = []  # (when, sid)
        self.published: list[tuple[float, str]] = []  # (when, message id)

    def _run(self) -> None:
        deadline = time.monotonic() + 240  # bounded whatever happens
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.once(self.servers[n % len(self.servers)], n)
            n += 1
            self.stop.wait(0.05)

    def once(self, server: ServerProcess, n: int) -> None:
        client = HubClient(server.url)
        try:
            client.connect({"token": self.token})
        except socketio.exceptions.ConnectionError:
            return  # refused (Redis unreachable): nothing was raised
        self.opened.append((time.monotonic(), client.sid))
        try:
            ack = client.call("publish", {"channel": self.channel, "event": "n", "data": n})
            if ack.get("ok"):
                self.published.append((time.monotonic(), ack["id"]))
        except (AssertionError, socketio.exceptions.SocketIOError):
            pass  # no ack: the connection went during the failover; the open still counts
        finally:
            client.disconnect()

    def since(self, moment: float) -> int:
        return sum(1 for at, _ in self.opened if at > moment)


def delivered(receiver: Receiver) -> tuple[set[str], set[str], int]:
    """Sids of delivered connection.opened events, ids of delivered message.published ones, and how many events
    came more than once (accepted_events verifies every signature)."""
    events = receiver.accepted_events()
    repeated = len(events) - len({event["id"] for event in events})
    return ({e["sid"] for e in of_type(events, "connection.opened")},
            {e["id"] for e in of_type(events, "message.published")}, repeated)


def wait_delivered(receiver: Receiver, raiser: Raiser, timeout: float = 30) -> tuple[int, int]:
    """Until every event the raiser must see delivered was; returns (events expected, events repeated)."""
    sids = {sid for _, sid in raiser.opened}
    ids = {mid for _, mid in raiser.published}
    deadline = time.monotonic() + timeout
    while True:
        got_sids, got_ids, repeated = delivered(receiver)
        if sids <= got_sids and ids <= got_ids:
            return len(sids) + len(ids), repeated
        assert time.monotonic() < deadline, (f"undelivered: {len(sids - got_sids)} of {len(sids)} connection.opened, "
                                             f"{len(ids - got_ids)} of {len(ids)} message.published")
        time.sleep(0.2)


def test_webhook_events_survive_the_master_killed_mid_stream(cluster, receiver, key_prefix):
    """One replica: after the kill the promoted replica has no replica to confirm with until the old master is back
    as one, so the outbox keeps putting (without duplicating what the stream already has) until WAIT confirms."""
    with running_instances(instances(cluster, receiver, key_prefix)) as servers:
        channel = unique("hooks")
        token = Api(servers[0]).token("raiser", [channel], publish=[channel])
        raiser = Raiser(servers, token, channel).start()
        try:
            wait_until(lambda: len(raiser.published) >= 20, 60, "events to be raised")
            wait_until(lambda: len(receiver.accepted_events()) >= 20, 30, "the first deliveries")
            old = cluster.master
            old.kill()
            killed = time.monotonic()
            wait_until(lambda: cluster.master_port() != old.port, 30, "the Sentinels to promote the replica")
            promoted = time.monotonic()
            old.start()  # empty: the Sentinels make it the new master's replica, so WAIT can be confirmed again
            wait_until(lambda: sum(1 for at, _ in raiser.published if at > promoted) >= 20, 60,
                       "acknowledged publishes after the failover")
        finally:
            raiser.close()
        assert raiser.since(killed) > 0 and any(at < killed for at, _ in raiser.opened)
        expected, repeated = wait_delivered(receiver, raiser)
        # An outbox met the dead or the replica-less master and said so once per outage, then queued again.
        assert any("webhook events cannot be queued" in server.log() for server in servers), servers[0].log()[-3000:]
        for server in servers:
            wait_until(lambda s=server: s.log().count("webhook events cannot be queued") == s.log().count(
                "webhook events are queued again"), 30, "the puts to be confirmed")
    record({"test": "webhooks-kill-master", "promoted_after_s": round(promoted - killed, 2),
            "events_expected": expected, "events_repeated": repeated,
            "events_raised_after_kill": raiser.since(killed)})


def test_webhook_events_a_stale_replica_lacks_are_put_again_after_it_is_promoted(cluster, receiver, key_prefix):
    """The replica hangs (SIGSTOP, link cut) while events are raised and the receiver refuses them: they reach the
    master's stream but no replica, so the outbox keeps them. The master is killed and the stale replica promoted:
    the stream there lacks them, and the outbox puts them again; all are delivered once the receiver accepts."""
    with running_instances(instances(cluster, receiver, key_prefix)) as servers:
        channel = unique("hooks")
        token = Api(servers[0]).token("raiser", [channel], publish=[channel])
        raiser = Raiser(servers, token, channel)
        for n in range(6):
            raiser.once(servers[n % 2], n)
        assert len(raiser.published) == 6
        wait_delivered(receiver, raiser)
        receiver.control(fail_first=10**6)  # nothing is accepted until the failover is over
        old, [replica] = cluster.master, cluster.replicas
        stream = f"{key_prefix}:webhooks:events"
        before = int(redis_cli(old.port, "XLEN", stream))
        replica.pause()
        redis_cli(old.port, "CLIENT", "KILL", "TYPE", "replica")  # nothing written from now on reaches it
        stale = len(raiser.opened)
        for n in range(6):
            raiser.once(servers[n % 2], n)  # publishes are refused (no replica confirms them): opens and closes only
        assert len(raiser.published) == 6
        # In the old master's stream (and read and refused by the receiver), in no replica's.
        wait_until(lambda: int(redis_cli(old.port, "XLEN", stream)) >= before + 12, 20,
                   "the stale events in the old master's stream")
        old.kill()
        replica.resume()
        wait_until(lambda: cluster.master_port() == replica.port, 30, "the stale replica to be promoted")
        old.start()  # a replica again, so puts are confirmed
        receiver.control(fail_first=0)
        expected, repeated = wait_delivered(receiver, raiser)
        got_sids, _, _ = delivered(receiver)
        assert {sid for _, sid in raiser.opened[stale:]} <= got_sids
        for server in servers:  # each pump met the unconfirmed puts, said so once, and queued again once confirmed
            wait_until(lambda s=server: "webhook events are queued again" in s.log(), 30, "the puts to be confirmed")
            assert server.log().count("webhook events cannot be queued") == 1, server.log()[-3000:]
    record({"test": "webhooks-stale-replica", "events_expected": expected, "events_repeated": repeated})
