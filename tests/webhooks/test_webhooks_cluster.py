"""Webhooks of two instances sharing a real Redis: each event sent once by one instance, occupancy decided
cluster-wide, and the events pending on an instance that is SIGKILLed delivered by the other."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from blueprints.webhooks import target_name
from tests.hub.realtime_client import Api, HubClient, unique
from tests.scale.processes import RedisProcess
from tests.webhooks.support import of_type, webhook_env

pytestmark = [pytest.mark.scale, pytest.mark.integration]


@pytest.fixture(scope="module")
def redis_server():
    server = RedisProcess().start()
    yield server
    server.close()


def _pair(server_factory, receiver, redis_server, **extra):
    prefix = f"t{os.urandom(4).hex()}"
    env = webhook_env(receiver, REDIS_URL=redis_server.url, REDIS_KEY_PREFIX=prefix, PRESENCE_TTL=3, **extra)
    return server_factory(INSTANCE_ID="one", **env), server_factory(INSTANCE_ID="two", **env), prefix


def test_two_instances_send_each_event_once_and_agree_on_occupancy(server_factory, receiver, redis_server):
    one, two, _ = _pair(server_factory, receiver, redis_server)
    room = unique("room")
    token = Api(one).token("dana", [room], publish=[room])
    on_one, on_two = HubClient(one.url).connect({"token": token}), HubClient(two.url).connect({"token": token})
    assert on_one.call("subscribe", {"channel": room})["ok"]
    assert on_two.call("subscribe", {"channel": room})["ok"]
    for i in range(10):
        for client in (on_one, on_two):
            assert client.call("publish", {"channel": room, "event": "n", "data": i})["ok"]
    on_one.disconnect()
    on_two.disconnect()
    events = receiver.wait_events(lambda es: len(of_type(es, "connection.closed")) == 2 and of_type(
        es, "channel.vacated"), what="both closes and the vacate")
    time.sleep(1.5)  # anything sent twice would arrive by now
    events = receiver.accepted_events()
    assert len({e["id"] for e in events}) == len(events), "an event was delivered twice"
    assert len(of_type(events, "channel.occupied")) == 1 and len(of_type(events, "channel.vacated")) == 1
    assert len(of_type(events, "presence.joined")) == 1 and len(of_type(events, "presence.left")) == 1
    assert {e["instance"] for e in events} == {"one", "two"}
    assert sorted(e["offset"] for e in of_type(events, "message.published")) == list(range(1, 21))
    senders = {entry["headers"]["X-Signalboard-Instance"] for entry in receiver.entries()}
    assert len(senders) == 1, senders  # one lease holder sends for the cluster


def test_events_pending_on_a_killed_instance_are_delivered_by_the_other(server_factory, receiver, redis_server,
                                                                         request):
    receiver.control(fail_first=10**6)  # nothing is accepted until the kill
    one, two, prefix = _pair(server_factory, receiver, redis_server)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    request.addfinalizer(client.close)  # an unclosed socket would warn (an error here) whenever it is collected
    lease = f"{prefix}:webhooks:lease:{target_name(receiver.hook_url)}"
    stream = f"{prefix}:webhooks:events"
    room = unique("room")
    token = Api(one).token("erin", [room], publish=[room])
    clients = [HubClient(one.url).connect({"token": token}), HubClient(two.url).connect({"token": token})]
    for c in clients:
        assert c.call("subscribe", {"channel": room})["ok"]
    for i in range(15):
        for c in clients:
            assert c.call("publish", {"channel": room, "event": "n", "data": i})["ok"]
    deadline = time.monotonic() + 10
    # Every event in the stream, and the lease holder has tried (and failed) at least once.
    while not (client.get(lease) and client.xlen(stream) >= 30 + 6 and receiver.entries()):
        assert time.monotonic() < deadline, "events did not reach the stream, or nobody tried to deliver them"
        time.sleep(0.1)
    holder = client.get(lease)
    assert not receiver.accepted_events()
    doomed, survivor = (one, two) if holder == "one" else (two, one)
    os.kill(doomed.worker_pid(), signal.SIGKILL)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.process.wait(10)
    pending_before = client.xpending(stream, target_name(receiver.hook_url))
    assert pending_before["pending"] > 0 and {c["name"] for c in pending_before["consumers"]} == {holder}
    receiver.control(fail_first=0)
    events = receiver.wait_events(lambda es: len({e["offset"] for e in of_type(es, "message.published")}) >= 30,
                                  timeout=30,
                                  what="the dead instance's pending events")
    assert sorted({e["offset"] for e in of_type(events, "message.published")}) == list(range(1, 31))
    for instance in ("one", "two"):  # each instance's events in the order it raised them
        seen: list[int] = []
        for event in of_type(events, "message.published"):
            if event["instance"] == instance and event["offset"] not in seen:
                seen.append(event["offset"])
        assert seen == sorted(seen) and len(seen) == 15, (instance, seen)
    assert {e["instance"] for e in of_type(events, "message.published")} == {"one", "two"}
    senders = {entry["headers"]["X-Signalboard-Instance"] for entry in receiver.entries() if entry["status"] == 200}
    assert senders == {"two" if holder == "one" else "one"}
    assert client.get(lease) == ("two" if holder == "one" else "one")
    assert survivor.readyz()["status"] == "ready"
    for c in clients:
        c.disconnect()


def test_webhooks_carry_on_after_redis_restarts_empty(server_factory, receiver):
    volatile = RedisProcess(durable=False).start()
    try:
        server = server_factory(**webhook_env(receiver, REDIS_URL=volatile.url, INSTANCE_ID="solo"))
        room = unique("room")
        api = Api(server)
        token = api.token("lee", [room], publish=[room])
        first = HubClient(server.url).connect({"token": token})
        assert first.call("subscribe", {"channel": room})["ok"]
        receiver.wait_events(lambda es: of_type(es, "subscription.created"), what="the first subscription")
        first.disconnect()
        receiver.wait_events(lambda es: of_type(es, "connection.closed"), what="the first close")
        volatile.stop()
        time.sleep(1)
        volatile.start()  # same port, no data: the stream and its groups are gone
        server.wait_until(lambda: server.readyz()["status"] == "ready", timeout=30, what="ready again")
        second = HubClient(server.url).connect({"token": token})
        assert second.call("subscribe", {"channel": room})["ok"]
        assert second.call("publish", {"channel": room, "event": "after", "data": 1})["ok"]
        events = receiver.wait_events(lambda es: of_type(es, "message.published"), timeout=30,
                                      what="events raised after the restart")
        assert len(of_type(events, "subscription.created")) == 2
        second.disconnect()
        assert not [line for line in server.bad_log_lines() if "webhook" in line], server.log()[-3000:]
    finally:
        volatile.close()


def test_a_dead_instances_last_subscribers_leave_through_the_survivor(server_factory, receiver, redis_server):
    one, two, _ = _pair(server_factory, receiver, redis_server)
    room = unique("room")
    client = HubClient(one.url).connect({"token": Api(one).token("mia", [room])})
    assert client.call("subscribe", {"channel": room})["ok"]
    receiver.wait_events(lambda es: of_type(es, "presence.joined"), what="the join")
    os.kill(one.worker_pid(), signal.SIGKILL)
    os.kill(one.pid, signal.SIGKILL)
    one.process.wait(10)
    # PRESENCE_TTL is 3 s: the survivor reaps the silent instance and raises what its connections' end means.
    events = receiver.wait_events(lambda es: of_type(es, "channel.vacated"), timeout=30, what="the vacate")
    left, vacated = of_type(events, "presence.left"), of_type(events, "channel.vacated")
    assert [(e["channel"], e["sub"], e["instance"]) for e in left] == [(room, "mia", "two")]
    assert [(e["channel"], e["instance"]) for e in vacated] == [(room, "two")]
    assert two.readyz()["status"] == "ready"
