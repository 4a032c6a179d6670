"""Test doubles for the hub: a delivery recording what each connection would receive, and a running worker.

The real delivery is Socket.IO (exercised by tests/integration); here the hub's ordering logic is checked on
its own, with rooms kept in plain sets that only the worker thread touches.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from hub.fanout import FanoutQueue
from hub.history import Message
from hub.presence import PresenceChange


class RecordingDelivery:
    def __init__(self) -> None:
        self.audience: dict[str, set[str]] = defaultdict(set)
        self.presence_audience: dict[str, set[str]] = defaultdict(set)
        self.received: dict[str, list[Message]] = defaultdict(list)
        self.presence_received: dict[str, list[PresenceChange]] = defaultdict(list)
        self.presence_views: dict[tuple[str, str], str] = {}  # (sid, channel) -> the view its presence events take
        self.gate = threading.Event()  # cleared: send() blocks, to play a slow network
        self.gate.set()

    def send(self, message: Message, sid: str | None = None, exclude: str | None = None) -> None:
        self.gate.wait(timeout=10)
        for target in [sid] if sid else sorted(self.audience[message.channel] - {exclude}):
            self.received[target].append(message)

    def send_presence(self, change: PresenceChange) -> None:
        for target in sorted(self.presence_audience[change.channel]):
            self.presence_received[target].append(change)

    def add(self, sid: str, channel: str, presence: str | None) -> None:
        self.audience[channel].add(sid)
        if presence:
            self.presence_audience[channel].add(sid)
            self.presence_views[(sid, channel)] = presence

    def remove(self, sid: str, channel: str) -> None:
        self.audience[channel].discard(sid)
        self.presence_audience[channel].discard(sid)

    def offsets(self, sid: str, channel: str) -> list[int]:
        return [m.offset for m in self.received[sid] if m.channel == channel]


class Worker:
    """A FanoutQueue with its run() loop on a thread; drain() waits until everything queued so far is handled."""

    def __init__(self, delivery: RecordingDelivery, max_pending: int = 10_000) -> None:
        self.fanout = FanoutQueue(delivery, max_pending=max_pending)
        self.delivery = delivery
        self.thread = threading.Thread(target=self.fanout.run, daemon=True)
        self.thread.start()

    def drain(self) -> None:
        marker = self.fanout.attach("drain-marker", "drain.marker", [])
        assert marker.wait(timeout=10), "fan-out worker did not catch up"

    def stop(self) -> None:
        self.delivery.gate.set()
        self.fanout.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
