"""The Redis history's idempotency, multi-channel and excluded-sid decisions, against a real redis-server."""

from __future__ import annotations

import json
import threading
import time

import pytest

from hub.redis_client import RedisKeys, connect
from hub.redis_history import Broadcast, RedisHistoryStore

pytestmark = [pytest.mark.scale, pytest.mark.integration]


@pytest.fixture
def keys(key_prefix):
    return RedisKeys(key_prefix)


def store_for(redis_server, keys, **kwargs) -> RedisHistoryStore:
    return RedisHistoryStore(connect(redis_server.url), keys, **kwargs)


def test_a_repeated_key_answers_the_first_message_and_stores_nothing(redis_server, keys):
    one, other = store_for(redis_server, keys), store_for(redis_server, keys)  # two instances
    [first] = one.append_all(["a"], "e", {"n": 1}, idempotency_key="k1")
    [again] = other.append_all(["a"], "e", {"n": 1}, idempotency_key="k1")
    assert not first.duplicate and again.duplicate
    assert (again.offset, again.id, again.ts) == (first.offset, first.id, first.ts)
    messages, complete = one.since("a", 0)
    assert complete and [(m.offset, m.id) for m in messages] == [(1, first.id)]
    [on_b] = other.append_all(["b"], "e", {"n": 1}, idempotency_key="k1")  # keys are per channel
    assert not on_b.duplicate and on_b.offset == 1


def test_concurrent_retries_on_many_connections_store_one_message(redis_server, keys):
    stores = [store_for(redis_server, keys) for _ in range(6)]
    answers = []
    lock = threading.Lock()
    start = threading.Barrier(len(stores))

    def retry(store: RedisHistoryStore) -> None:
        start.wait(5)
        for _ in range(5):
            [message] = store.append_all(["hot"], "e", 1, idempotency_key="same")
            with lock:
                answers.append(message)

    threads = [threading.Thread(target=retry, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(answers) == 30 and sum(not m.duplicate for m in answers) == 1
    assert len({(m.offset, m.id, m.ts) for m in answers}) == 1
    assert stores[0].latest("hot") == 1


def test_the_key_record_expires_with_the_window(redis_server, keys):
    store = store_for(redis_server, keys, idempotency_window=1)
    [first] = store.append_all(["a"], "e", 1, idempotency_key="k")
    record = keys.idempotency("a", "k")
    ttl = store.client.pttl(record)
    assert 0 < ttl <= 1000
    time.sleep(1.1)
    assert store.client.exists(record) == 0  # Redis dropped it: memory follows the window
    [after] = store.append_all(["a"], "e", 1, idempotency_key="k")
    assert not after.duplicate and after.offset == first.offset + 1


def test_a_multi_channel_append_is_one_step_with_one_id(redis_server, keys):
    store = store_for(redis_server, keys)
    store.append("b", "e", 0)
    a, b = store.append_all(["a", "b"], "e", {"x": 1}, idempotency_key="m")
    assert (a.offset, b.offset) == (1, 2) and a.id == b.id and a.ts == b.ts
    a2, b2, c2 = store.append_all(["a", "b", "c"], "e", {"x": 1}, idempotency_key="m")
    assert (a2.duplicate, b2.duplicate, c2.duplicate) == (True, True, False)
    assert (a2.offset, b2.offset, c2.offset) == (1, 2, 1)
    assert [store.latest(c) for c in "abc"] == [1, 2, 1]


def test_the_broadcast_skips_the_excluded_sid(redis_server, keys):
    store = store_for(redis_server, keys, broadcast=Broadcast(keys.socketio_channel, "channel "))
    pubsub = connect(redis_server.url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.socketio_channel)
    pubsub.get_message(timeout=1)
    store.append_all(["a", "b"], "e", 1, exclude="SIDx-_1")
    store.append_all(["a"], "e", 2, idempotency_key="once")
    store.append_all(["a"], "e", 2, idempotency_key="once")  # a duplicate publishes nothing
    store.append("a", "e", 3)
    packets = []
    deadline = time.monotonic() + 5
    while len(packets) < 4 and time.monotonic() < deadline:  # "a 3" right after "a 2": no duplicate between
        message = pubsub.get_message(timeout=0.5)
        if message:
            packets.append(json.loads(message["data"]))
    pubsub.close()
    assert [(p["room"], p["data"][0], p["skip_sid"]) for p in packets] == [
        ("channel a", 1, "SIDx-_1"), ("channel b", 1, "SIDx-_1"), ("channel a", 2, None), ("channel a", 3, None)]
