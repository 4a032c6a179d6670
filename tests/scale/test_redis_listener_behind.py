"""A listener behind, against a real redis-server: the health monitor reconnects a deaf listener, never a busy one,
and joins are refused at once while earlier ones wait for it.

A listener that is behind (in a reconnect storm it is starved of CPU for seconds) receives nothing new for as long
as a dead subscription does; reconnecting it would drop what Redis already sent it, the join markers of waiting
subscriptions included. Here the listener is held busy by a marker callback that sleeps, the stand-in for the
starvation (which cannot be produced on demand).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
import socketio

from hub import redis_fanout
from hub.errors import Unavailable
from hub.external import history_for
from hub.redis_fanout import RedisFanout
from hub.redis_history import CHANNEL_ROOM_PREFIX
from integration.redis_manager import ClusterQueueManager
from tests.hub.recording_delivery import RecordingDelivery
from tests.scale.processes import wait_until
from utils import redis_health
from utils.drain import BackgroundTasks
from utils.redis_health import RedisHealth

pytestmark = [pytest.mark.scale, pytest.mark.integration]

BUSY_SECONDS = redis_health.RECONNECT_AFTER + 2.5


class _NoPresence:
    def heartbeat(self) -> list:
        return []


@pytest.fixture
def monitored(redis_server, key_prefix):
    """A real queue manager (on a python-socketio server) and its health monitor, both running."""
    history = history_for(redis_server.url, key_prefix, 100, 60.0)

    def spawn(target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    tasks = BackgroundTasks(spawn)
    manager = ClusterQueueManager(redis_server.url, history.keys.socketio_channel, history, CHANNEL_ROOM_PREFIX,
                                  tasks.start)
    socketio.Server(client_manager=manager)
    health = RedisHealth(history.client, manager, _NoPresence(), tasks.start, presence_interval=3600)
    health.ensure_started()
    wait_until(lambda: health.check() is None, 10, "the monitor to report ready")
    assert manager.pubsub is not None
    yield manager, health
    tasks.stop_all()


def test_a_listener_just_started_is_not_taken_for_deaf(caplog, monitored):
    # A probe published before the subscription is lost; silence counts from the subscription, not from zero.
    time.sleep(redis_health.PROBE_INTERVAL * 2)
    startup = [record.getMessage() for record in caplog.get_records("setup") + caplog.get_records("call")]
    assert not any("; reconnecting" in message for message in startup), startup


def test_a_busy_listener_is_left_to_catch_up_and_loses_nothing(monitored, caplog):
    manager, health = monitored
    caplog.set_level(logging.INFO, logger="utils.redis_health")
    caplog.set_level(logging.INFO, logger="integration.redis_manager")
    busy = threading.Event()
    manager.probe(lambda: (busy.set(), time.sleep(BUSY_SECONDS)))
    wait_until(busy.is_set, 5, "the listener to be held busy")
    reached: list[int] = []
    for n in range(5):  # markers Redis hands to the busy listener, as a storm's join markers
        manager.probe(lambda n=n: reached.append(n))
        time.sleep(0.2)
    wait_until(lambda: reached == [0, 1, 2, 3, 4], BUSY_SECONDS + 5, "every marker sent while the listener was busy")
    messages = [record.getMessage() for record in caplog.records]
    assert not any("; reconnecting" in message for message in messages), messages
    assert sum("subscribed to" in message for message in messages) == 0, messages  # no new subscription
    assert sum("is behind" in message for message in messages) == 1, messages
    wait_until(lambda: health.check() is None, 5, "the monitor to report ready again")


def test_a_deaf_idle_listener_is_reconnected(monitored, caplog):
    manager, health = monitored
    caplog.set_level(logging.INFO, logger="utils.redis_health")
    caplog.set_level(logging.INFO, logger="integration.redis_manager")
    # Redis stops sending to the listener while its connection stays up and it keeps polling: deaf and idle.
    manager.pubsub.execute_command("UNSUBSCRIBE", manager.channel)
    wait_until(lambda: any("subscribed to" in record.getMessage() for record in caplog.records),
          redis_health.RECONNECT_AFTER + 10, "the monitor to resubscribe the listener")
    assert any("received nothing" in record.getMessage() for record in caplog.records)
    reached = threading.Event()
    manager.probe(reached.set)
    assert reached.wait(5), "a marker after the reconnect never came back"
    wait_until(lambda: health.check() is None, 10, "the monitor to report ready again")


def test_joins_are_refused_at_once_while_earlier_ones_wait_for_a_listener_behind(monitored):
    """A join replays its backlog through Redis; one started while the listener is far behind would outlast its
    subscriber's wait, so it is refused before anything is published, and joins pass again once it caught up."""
    manager, _ = monitored
    delivery = RecordingDelivery()
    fanout = RedisFanout(manager.history, manager, delivery)
    busy = threading.Event()
    manager.probe(lambda: (busy.set(), time.sleep(redis_fanout.JOIN_DELAY_LIMIT + 1.5)))
    wait_until(busy.is_set, 5, "the listener to be held busy")
    fanout.admit_join()
    first = fanout.attach("a", "orders", [])
    time.sleep(redis_fanout.JOIN_DELAY_LIMIT * 0.5)
    fanout.admit_join()  # the first join has not waited long yet
    time.sleep(redis_fanout.JOIN_DELAY_LIMIT * 0.5 + 0.2)
    with pytest.raises(Unavailable) as refused:
        fanout.admit_join()
    assert refused.value.retry_after == 2.0
    assert fanout.stats() == {"pending": 1, "failed": 0, "delayed": 1}
    assert first.wait(10), "the join waiting behind the busy listener was never placed"
    assert delivery.audience["orders"] == {"a"}
    fanout.admit_join()
    assert fanout.stats() == {"pending": 0, "failed": 0, "delayed": 1}


class RecordingTap:
    """What an SSE stream in a room would be sent (integration/room_taps.py): the tap of connection "a"."""

    def __init__(self) -> None:
        self.got: list[int] = []

    def deliver(self, event: str, args: list) -> None:
        self.got.append(args[1]["offset"])


def test_the_backlog_of_a_join_given_up_is_not_sent(monitored):
    """A subscribe that timed out is undone (detach) and answered `unavailable`; its backlog, still queued before
    its marker, must not reach the connection, or subscribing again there would deliver it twice."""
    manager, _ = monitored
    delivery = RecordingDelivery()
    fanout = RedisFanout(manager.history, manager, delivery)
    for n in range(3):
        manager.history.append("orders", "tick", {"n": n})
    tap = RecordingTap()
    manager.taps.register("a", tap)
    busy = threading.Event()
    manager.probe(lambda: (busy.set(), time.sleep(1.0)))
    wait_until(busy.is_set, 5, "the listener to be held busy")
    owed, _ = manager.history.since("orders", 0, 1, subscribing=True)
    given_up = fanout.attach("a", "orders", owed)
    fanout.detach("a", "orders")  # before the listener reaches the backlog
    again_owed, _ = manager.history.since("orders", 0, 1, subscribing=True)
    again = fanout.attach("a", "orders", again_owed)
    assert again.wait(10)
    assert tap.got == [1, 2, 3]  # once: the second join's backlog only
    assert delivery.audience["orders"] == {"a"}
    assert not given_up.is_set()  # its marker was forgotten with it: nobody waits for it any more
