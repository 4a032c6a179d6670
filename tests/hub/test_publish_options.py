"""Idempotent, multi-channel and echo-suppressed publishing: the memory store's decisions and the hub's checks."""

from __future__ import annotations

import threading

import pytest

from hub.errors import Forbidden, InvalidChannel, InvalidPayload, PayloadTooLarge
from hub.history import MemoryHistoryStore
from hub.hub import MAX_CHANNELS, Hub
from hub.presence import PresenceRegistry
from tests.hub.test_history import Clock


@pytest.fixture
def hub(worker) -> Hub:
    return Hub(MemoryHistoryStore(), PresenceRegistry(), worker.fanout, max_payload_bytes=100)


def join(hub: Hub, sid: str, channel: str) -> None:
    assert hub.subscribe(sid, sid, ["**"], channel).ready.wait(5)


# --- the memory store ------------------------------------------------------------------------------------------


def test_a_repeated_key_answers_the_first_message_and_stores_nothing():
    store = MemoryHistoryStore()
    [first] = store.append_all(["a"], "e", 1, idempotency_key="k1")
    [again] = store.append_all(["a"], "e", 1, idempotency_key="k1")
    assert not first.duplicate and again.duplicate
    assert (again.offset, again.id, again.ts) == (first.offset, first.id, first.ts)
    assert store.latest("a") == 1 and store.since("a", 0) == ([first], True)
    assert again.answer() == {**first.meta(), "duplicate": True} and "duplicate" not in first.answer()


def test_keys_are_per_channel():
    store = MemoryHistoryStore()
    store.append("b", "e", 0)
    [on_a] = store.append_all(["a"], "e", 1, idempotency_key="k")
    [on_b] = store.append_all(["b"], "e", 1, idempotency_key="k")
    assert not on_b.duplicate and (on_a.offset, on_b.offset) == (1, 2)
    assert [m.duplicate for m in store.append_all(["a", "b", "c"], "e", 1, idempotency_key="k")] == [True, True, False]


def test_a_key_expires_with_the_window_and_is_forgotten():
    clock = Clock()
    store = MemoryHistoryStore(idempotency_window=10, clock=clock)
    store.append_all(["a"], "e", 1, idempotency_key="old")
    clock.now += 5
    store.append_all(["a"], "e", 2, idempotency_key="newer")
    clock.now += 4.9
    assert store.append_all(["a"], "e", 1, idempotency_key="old")[0].duplicate
    clock.now += 0.1  # "old" is exactly 10 s old: expired
    [after] = store.append_all(["a"], "e", 1, idempotency_key="old")
    assert not after.duplicate and after.offset == 3
    assert store.idempotency_keys() == 2  # the new "old" and "newer"
    clock.now += 10
    store.append("a", "e", 4)  # any append drops what has expired: memory follows the window
    assert store.idempotency_keys() == 0


def test_concurrent_retries_store_one_message():
    store = MemoryHistoryStore()
    answers = []
    start = threading.Barrier(8)

    def retry() -> None:
        start.wait(5)
        answers.extend(store.append_all(["hot"], "e", 1, idempotency_key="same"))

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(answers) == 8 and sum(not m.duplicate for m in answers) == 1
    assert {(m.offset, m.id, m.ts) for m in answers} == {(1, answers[0].id, answers[0].ts)}
    assert store.latest("hot") == 1


def test_a_multi_channel_append_gives_each_channel_its_own_offset_and_one_id():
    store = MemoryHistoryStore()
    store.append("b", "e", 0)
    a, b = store.append_all(["a", "b"], "e", {"x": 1})
    assert (a.channel, a.offset, b.channel, b.offset) == ("a", 1, "b", 2)
    assert a.id == b.id and a.ts == b.ts


# --- the hub -----------------------------------------------------------------------------------------------------


def test_a_duplicate_is_not_delivered(hub, worker, delivery):
    join(hub, "s1", "c")
    first = hub.publish("c", "e", 1, idempotency_key="k")
    again = hub.publish("c", "e", 1, idempotency_key="k")
    hub.publish("c", "e", 2)
    worker.drain()
    assert again.duplicate and again.offset == first.offset
    assert [m.offset for m in delivery.received["s1"]] == [1, 2]


def test_batch_entries_carry_their_own_keys(hub, worker, delivery):
    join(hub, "s1", "c")
    batch = [{"channel": "c", "event": "e", "data": n, "idempotency_key": f"k{n % 2}"} for n in range(3)]
    results = hub.publish_batch(batch)
    worker.drain()
    assert [(m.offset, m.duplicate) for m in results] == [(1, False), (2, False), (1, True)]
    assert [m.data for m in delivery.received["s1"]] == [0, 1]


def test_exclude_skips_one_connection_and_keeps_history(hub, worker, delivery):
    for sid in ("me", "you"):
        join(hub, sid, "c")
    hub.publish("c", "e", 1, exclude="me")
    worker.drain()
    assert delivery.received["me"] == [] and [m.data for m in delivery.received["you"]] == [1]
    assert [m.data for m in hub.read_history("c").messages] == [1]


def test_publish_request_to_several_channels(hub, worker, delivery):
    join(hub, "s1", "a")
    join(hub, "s2", "b")
    published = hub.publish_request({"channels": ["a", "b"], "event": "e", "data": 1, "idempotency_key": "k"})
    answer = published.answer()
    assert [(r["channel"], r["offset"]) for r in answer["results"]] == [("a", 1), ("b", 1)]
    assert set(answer["results"][0]) == {"channel", "offset", "id", "ts"}
    again = hub.publish_request({"channels": ["a", "b"], "event": "e", "data": 1, "idempotency_key": "k"}).answer()
    assert again == {"results": [{**r, "duplicate": True} for r in answer["results"]]}
    worker.drain()
    assert [len(delivery.received[s]) for s in ("s1", "s2")] == [1, 1]


@pytest.mark.parametrize(
    "body, grants, error",
    [
        ({"channels": ["a", "b", "billing"]}, ["a", "b"], Forbidden),
        ({"channels": ["a", "bad name"]}, None, InvalidChannel),
        ({"channels": ["a", "a"]}, None, InvalidPayload),
        ({"channels": []}, None, InvalidPayload),
        ({"channels": "a"}, None, InvalidPayload),
        ({"channels": [f"c{n}" for n in range(MAX_CHANNELS + 1)]}, None, InvalidPayload),
        ({"channels": ["a"], "channel": "a"}, None, InvalidPayload),
        ({"channels": ["a"], "data": "x" * 200}, None, PayloadTooLarge),
        ({"channel": "a", "idempotency_key": ""}, None, InvalidPayload),
        ({"channel": "a", "idempotency_key": "k" * 129}, None, InvalidPayload),
        ({"channel": "a", "idempotency_key": "tab\there"}, None, InvalidPayload),
        ({"channel": "a", "idempotency_key": 7}, None, InvalidPayload),
        ({"channel": "a", "idempotency_key": "clé"}, None, InvalidPayload),
        ({"channel": "a", "idempotency_key": "k\x7f"}, None, InvalidPayload),
    ],
)
def test_a_refused_publish_stores_nothing_anywhere(hub, body, grants, error):
    with pytest.raises(error):
        hub.publish_request({"event": "e", "data": 1, **body}, grants=grants)
    assert hub.history.channels() == [] and hub.history.latest("a") == 0


def test_the_longest_key_and_every_printable_ascii_character_are_accepted(hub):
    assert not hub.publish("a", "e", 1, idempotency_key="k" * 128).duplicate
    assert hub.publish("a", "e", 1, idempotency_key="".join(map(chr, range(32, 127)))).offset == 2


@pytest.mark.parametrize("exclude", ["", "has space", "x" * 65, 5, ["sid"]])
def test_exclude_must_look_like_a_sid(hub, exclude):
    with pytest.raises(InvalidPayload):
        hub.publish("a", "e", 1, exclude=exclude)


def test_multi_channel_publishes_cannot_deadlock(hub):
    """Two publishes naming the same channels in opposite orders, many times, from two threads."""
    names = [f"ch{n}" for n in range(20)]

    def publish(order: list[str]) -> None:
        for _ in range(50):
            hub.publish_to(order, "e", 1)

    threads = [threading.Thread(target=publish, args=(o,)) for o in (names, names[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(t.is_alive() for t in threads)
    assert all(hub.history.latest(n) == 100 for n in names)
