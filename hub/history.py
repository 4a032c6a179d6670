"""Per-channel message history with offsets, behind one small interface (memory now, Redis Streams later)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

DEFAULT_IDEMPOTENCY_WINDOW = 300.0


@dataclass(frozen=True)
class Message:
    """One published message. `offset` counts from 1 per channel; `ts` is epoch milliseconds.

    `duplicate` is True only in the answer to a publish whose idempotency key the channel had already seen within
    the window: it then carries the first publish's offset, id and ts, and nothing was stored or delivered again.
    """

    channel: str
    event: str
    data: Any
    offset: int
    id: str
    ts: int
    duplicate: bool = field(default=False, compare=False)

    def meta(self) -> dict[str, Any]:
        """The second argument subscribers receive with `data`."""
        return {"channel": self.channel, "offset": self.offset, "id": self.id, "ts": self.ts}

    def answer(self) -> dict[str, Any]:
        """What the publisher is told: the meta, plus `"duplicate": true` for a repeated idempotency key."""
        return {**self.meta(), "duplicate": True} if self.duplicate else self.meta()


def new_message_id() -> str:
    return uuid.uuid4().hex


class HistoryStore(Protocol):
    """Where published messages are numbered and kept for recovery: MemoryHistoryStore in one process,
    hub.redis_history.RedisHistoryStore (which also broadcasts each message) with Redis. Both subclass it for
    append(), written once over append_all().

    Implementations must assign offsets atomically (one writer's append never shares or skips an offset),
    never reuse an offset for a channel, and evict by their own size/age bounds.
    `epoch` identifies one life of the numbering: if a store loses its counters (a restarted memory store,
    a flushed Redis), its epoch changes, so a client's old offsets are recognised as meaningless.
    """

    @property
    def epoch(self) -> str: ...

    def append(self, channel: str, event: str, data: Any) -> Message:
        """Store a message and return it with its new offset, id and timestamp."""
        return self.append_all([channel], event, data)[0]

    def append_all(
        self,
        channels: Sequence[str],
        event: str,
        data: Any,
        *,
        idempotency_key: str | None = None,
        exclude: str | None = None,
    ) -> list[Message]:
        """Store one message in each of `channels` (distinct), each with that channel's next offset, all in one
        atomic step, sharing one id and timestamp; returns them in the order of `channels`.

        With `idempotency_key`, a channel that already stored a message under that key within the idempotency
        window stores nothing and returns that first message's offset, id and ts with `duplicate` set. Stores that
        broadcast live (Redis) skip the connection `exclude` in that broadcast.
        """
        ...

    def since(self, channel: str, offset: int, limit: int | None = None, *,
              subscribing: bool = False) -> tuple[list[Message], bool]:
        """Messages with an offset above `offset`, oldest first, at most `limit`.

        The flag is True when nothing after `offset` is missing (all of them are still held),
        False when some were evicted or `offset` lies beyond the latest offset (stale client state).
        `subscribing`: the read starts a subscription, and a store whose fanout replays the backlog itself (Redis)
        remembers where the read ended, also when `limit` cut it short.
        """
        ...

    def latest(self, channel: str) -> int:
        """The offset of the last message appended to `channel`, 0 if none ever was."""
        ...

    def channels(self) -> list[str]:
        """Channels that currently hold messages."""
        ...


@dataclass(frozen=True)
class _Seen:
    """What a keyed publish answered, kept for the idempotency window (not the data: memory stays small)."""

    offset: int
    id: str
    ts: int
    expires_ms: int


@dataclass
class _ChannelLog:
    latest: int = 0
    messages: deque[Message] = field(default_factory=deque)


# Idle channels an append looks at for freeing: enough to keep up with channel creation, O(1) per append.
_FREE_STEPS = 8


class MemoryHistoryStore(HistoryStore):
    """History in this process's memory: lost on restart, bounded per channel by count and age.

    A channel whose messages have all aged out and that `in_use` says nobody is subscribed to is forgotten, so
    channels used once do not keep memory for the life of the process. Its offsets are not reused: every channel
    created after that starts above the highest offset a forgotten channel had (`_floor`), and an unknown channel's
    latest offset is that floor, so a client's old offset is never taken for a new message's.
    """

    def __init__(
        self,
        max_messages: int = 1000,
        max_age_seconds: float = 300.0,
        *,
        idempotency_window: float = DEFAULT_IDEMPOTENCY_WINDOW,
        in_use: Callable[[str], bool] = lambda channel: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if max_age_seconds <= 0 or idempotency_window <= 0:
            raise ValueError("max_age_seconds and idempotency_window must be positive")
        self.max_messages = max_messages
        self.max_age_ms = int(max_age_seconds * 1000)
        self.window_ms = int(idempotency_window * 1000)
        self._epoch = uuid.uuid4().hex[:12]
        self._clock = clock
        self._in_use = in_use
        # Guards _logs, _floor, _seen and _expiry: offset assignment, the idempotency decision, appends and evictions
        # must be one step, or two publishers could share an offset, two retries could both be stored, or a reader could
        # see a half-evicted log.
        self._lock = threading.Lock()
        # Least recently appended channel first, so the ones to free are found at the front.
        self._logs: OrderedDict[str, _ChannelLog] = OrderedDict()
        # Every offset a forgotten channel ever had is at most this; new channels count on from it.
        self._floor = 0
        # (channel, idempotency key) -> the first answer; _expiry lists the same pairs oldest first (one window for
        # all, so insertion order is expiry order) and lets each append drop the expired ones from the front.
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._expiry: deque[tuple[int, tuple[str, str]]] = deque()

    @property
    def epoch(self) -> str:
        return self._epoch

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _evict_old(self, log: _ChannelLog, now_ms: int) -> None:
        horizon = now_ms - self.max_age_ms
        while log.messages and log.messages[0].ts <= horizon:
            log.messages.popleft()

    def _free_idle(self, now_ms: int, steps: int | None = _FREE_STEPS) -> None:
        """Forget channels at the front whose newest message has aged out, unless someone is subscribed; at most
        `steps` looked at (None: all, for readers that walk every channel anyway)."""
        horizon = now_ms - self.max_age_ms
        for _ in range(len(self._logs) if steps is None else min(steps, len(self._logs))):
            channel, log = next(iter(self._logs.items()))
            if log.messages and log.messages[-1].ts > horizon:
                if steps is not None:
                    return  # the least recently appended is still fresh: so is every channel behind it
                self._logs.move_to_end(channel)
            elif self._in_use(channel):
                self._logs.move_to_end(channel)  # looked at again once the others have had their turn
            else:
                del self._logs[channel]
                self._floor = max(self._floor, log.latest)

    def _forget_expired_keys(self, now_ms: int) -> None:
        while self._expiry and self._expiry[0][0] <= now_ms:
            expires_ms, pair = self._expiry.popleft()
            seen = self._seen.get(pair)
            if seen is not None and seen.expires_ms == expires_ms:  # not a later entry for the same pair
                del self._seen[pair]

    def idempotency_keys(self) -> int:
        """How many (channel, key) pairs are remembered (expired ones are dropped at the next append)."""
        with self._lock:
            return len(self._seen)

    def append_all(
        self,
        channels: Sequence[str],
        event: str,
        data: Any,
        *,
        idempotency_key: str | None = None,
        exclude: str | None = None,  # nothing is broadcast from here: the fan-out queue skips it
    ) -> list[Message]:
        with self._lock:
            now_ms = self._now_ms()
            self._forget_expired_keys(now_ms)
            self._free_idle(now_ms)
            message_id = new_message_id()
            results = []
            for channel in channels:
                seen = self._seen.get((channel, idempotency_key)) if idempotency_key is not None else None
                if seen is not None:
                    results.append(Message(channel, event, data, seen.offset, seen.id, seen.ts, duplicate=True))
                    continue
                log = self._logs.pop(channel, None) or _ChannelLog(latest=self._floor)
                self._logs[channel] = log  # now the most recently appended
                self._evict_old(log, now_ms)
                log.latest += 1
                message = Message(channel, event, data, log.latest, message_id, now_ms)
                log.messages.append(message)
                if len(log.messages) > self.max_messages:
                    log.messages.popleft()
                if idempotency_key is not None:
                    expires_ms = now_ms + self.window_ms
                    self._seen[(channel, idempotency_key)] = _Seen(message.offset, message_id, now_ms, expires_ms)
                    self._expiry.append((expires_ms, (channel, idempotency_key)))
                results.append(message)
            return results

    def since(self, channel: str, offset: int, limit: int | None = None, *,
              subscribing: bool = False) -> tuple[list[Message], bool]:
        with self._lock:
            log = self._logs.get(channel)
            if log is None:
                return [], offset == self._floor  # a forgotten channel: complete only from where numbering resumes
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
            return log.latest if log else self._floor

    def channels(self) -> list[str]:
        with self._lock:
            now_ms = self._now_ms()
            for log in self._logs.values():
                self._evict_old(log, now_ms)
            self._free_idle(now_ms, steps=None)
            return sorted(name for name, log in self._logs.items() if log.messages)
