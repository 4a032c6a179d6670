"""Per-channel message history with offsets, behind one small interface (memory now, Redis Streams later)."""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any


@dataclass(frozen=True)
class Message:
    """One published message. `offset` counts from 1 per channel; `ts` is epoch milliseconds."""

    channel: str
    event: str
    data: Any
    offset: int
    id: str
    ts: int

    def meta(self) -> dict[str, Any]:
        """The second argument subscribers receive with `data`."""
        return {"channel": self.channel, "offset": self.offset, "id": self.id, "ts": self.ts}


def new_message_id() -> str:
    return uuid.uuid4().hex


class HistoryStore(ABC):
    """Where published messages are numbered and kept for recovery.

    Implementations must assign offsets atomically (one writer's append never shares or skips an offset),
    never reuse an offset for a channel, and evict by their own size/age bounds.
    `epoch` identifies one life of the numbering: if a store loses its counters (a restarted memory store,
    a flushed Redis), its epoch changes, so a client's old offsets are recognised as meaningless.
    """

    epoch: str

    @abstractmethod
    def append(self, channel: str, event: str, data: Any) -> Message:
        """Store a message and return it with its new offset, id and timestamp."""

    @abstractmethod
    def since(self, channel: str, offset: int, limit: int | None = None) -> tuple[list[Message], bool]:
        """Messages with an offset above `offset`, oldest first, at most `limit`.

        The flag is True when nothing after `offset` is missing (all of them are still held),
        False when some were evicted or `offset` lies beyond the latest offset (stale client state).
        """

    @abstractmethod
    def latest(self, channel: str) -> int:
        """The offset of the last message appended to `channel`, 0 if none ever was."""

    @abstractmethod
    def channels(self) -> list[str]:
        """Channels that currently hold messages."""


@dataclass
class _ChannelLog:
    latest: int = 0
    messages: deque[Message] = field(default_factory=deque)


class MemoryHistoryStore(HistoryStore):
    """History in this process's memory: lost on restart, bounded per channel by count and age."""

    def __init__(
        self,
        max_messages: int = 1000,
        max_age_seconds: float = 300.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if max_age_seconds <= 0:
            raise ValueError("max_age_seconds must be positive")
        self.max_messages = max_messages
        self.max_age_ms = int(max_age_seconds * 1000)
        self.epoch = uuid.uuid4().hex[:12]
        self._clock = clock
        # Guards _logs and everything inside it: offset assignment, appends and evictions must be
        # one step, or two publishers could share an offset or a reader could see a half-evicted log.
        self._lock = threading.Lock()
        # A channel's entry outlives its messages: its counter must never restart while the epoch lives.
        self._logs: dict[str, _ChannelLog] = {}

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _evict_old(self, log: _ChannelLog, now_ms: int) -> None:
        horizon = now_ms - self.max_age_ms
        while log.messages and log.messages[0].ts <= horizon:
            log.messages.popleft()

    def append(self, channel: str, event: str, data: Any) -> Message:
        with self._lock:
            log = self._logs.setdefault(channel, _ChannelLog())
            now_ms = self._now_ms()
            self._evict_old(log, now_ms)
            log.latest += 1
            message = Message(channel, event, data, log.latest, new_message_id(), now_ms)
            log.messages.append(message)
            if len(log.messages) > self.max_messages:
                log.messages.popleft()
            return message

    def since(self, channel: str, offset: int, limit: int | None = None) -> tuple[list[Message], bool]:
        with self._lock:
            log = self._logs.get(channel)
            if log is None:
                return [], offset == 0
            self._evict_old(log, self._now_ms())
            if offset > log.latest:
                return [], False
            first_held = log.messages[0].offset if log.messages else log.latest + 1
            complete = offset + 1 >= first_held
            # Offsets in the deque are contiguous, so the start index is arithmetic, not a search.
            start = max(0, offset + 1 - first_held)
            stop = None if limit is None else start + limit
            return list(islice(log.messages, start, stop)), complete

    def latest(self, channel: str) -> int:
        with self._lock:
            log = self._logs.get(channel)
            return log.latest if log else 0

    def channels(self) -> list[str]:
        with self._lock:
            now_ms = self._now_ms()
            for log in self._logs.values():
                self._evict_old(log, now_ms)
            return sorted(name for name, log in self._logs.items() if log.messages)
