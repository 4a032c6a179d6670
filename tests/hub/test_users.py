"""User-level control without Flask: input checks, revocations recorded before the action is sent, answers summed."""

from __future__ import annotations

import pytest

from hub.control import LocalControlBus, Replies
from hub.errors import InvalidChannel, InvalidPayload, Unavailable
from hub.revocations import MemoryRevocations, channel_key, jti_key, sub_key
from hub.users import UserControl


class FakeBus:
    """Two instances answering with fixed results; records what was asked."""

    def __init__(self, *results: dict, expected: int | None = None) -> None:
        self.results = list(results)
        self.expected = len(results) if expected is None else expected
        self.asked: list[dict] = []

    def request(self, action: dict) -> Replies:
        self.asked.append(action)
        return Replies(self.results, self.expected)

    def bind(self, apply, start_task, on_subscribed):
        return None


def control(bus, store=None) -> UserControl:
    return UserControl(bus, MemoryRevocations() if store is None else store, max_ttl=3600)


def test_answers_sum_every_instance_and_say_whether_all_answered():
    bus = FakeBus({"instance": "a", "count": 2}, {"instance": "b", "count": 1}, expected=3)
    answer = control(bus).disconnect("alice", "banned", True)
    assert answer == {"sub": "alice", "disconnected": 3, "instances": 2, "complete": False}
    assert bus.asked == [{"action": "disconnect", "sub": "alice", "reason": "banned", "reconnect": True}]


def test_connections_are_merged_oldest_first():
    bus = FakeBus({"connections": [{"sid": "s2", "connected_since": 20.0}]},
                  {"connections": [{"sid": "s1", "connected_since": 10.0}]})
    answer = control(bus).connections("alice")
    assert [row["sid"] for row in answer["connections"]] == ["s1", "s2"] and answer["complete"] is True


def test_revocations_are_recorded_before_the_action_is_sent():
    store = MemoryRevocations()
    seen: list[bool] = []

    class Recording(FakeBus):
        def request(self, action: dict) -> Replies:
            key = {"revoke": sub_key("alice") if "sub" in action else jti_key("j1"),
                   "unsubscribe": channel_key("alice", "orders.eu")}[action["action"]]
            seen.append(store.is_revoked(key))
            return super().request(action)

    users = control(Recording({"count": 0}), store)
    answer = users.revoke(sub="alice")
    assert answer["revoked"] == {"sub": "alice"} and answer["kept_until"] == int(answer["revoked_at"] + 3600)
    users.revoke(jti="j1")
    users.unsubscribe("alice", "orders.eu")
    assert seen == [True, True, True]


@pytest.mark.parametrize("call, error", [
    (lambda u: u.revoke(), InvalidPayload),
    (lambda u: u.revoke(sub="a", jti="b"), InvalidPayload),
    (lambda u: u.revoke(sub=""), InvalidPayload),
    (lambda u: u.revoke(jti="x" * 129), InvalidPayload),
    (lambda u: u.revoke(jti="tab\there"), InvalidPayload),
    (lambda u: u.disconnect("a", reason=""), InvalidPayload),
    (lambda u: u.disconnect("a", reason="x" * 201), InvalidPayload),
    (lambda u: u.disconnect("a", reconnect="yes"), InvalidPayload),
    (lambda u: u.disconnect("x" * 257), InvalidPayload),
    (lambda u: u.unsubscribe("a", None), InvalidPayload),
    (lambda u: u.unsubscribe("a", "bad channel"), InvalidChannel),
    (lambda u: u.connections(7), InvalidPayload),
])
def test_bad_input_is_refused_and_sends_nothing(call, error):
    bus = FakeBus({"count": 0})
    store = MemoryRevocations()
    with pytest.raises(error):
        call(control(bus, store))
    assert bus.asked == [] and len(store) == 0


def test_without_redis_the_one_instance_applies_it_and_a_cli_process_reaches_none():
    bus = LocalControlBus()
    with pytest.raises(Unavailable):
        control(bus).disconnect("alice")
    bus.bind(lambda action: {"instance": "here", "count": 1}, lambda *a: None, lambda: None)
    assert control(bus).disconnect("alice")["disconnected"] == 1
