"""The hub's operations (publish, subscribe, history, presence) with their checks, for any transport to call."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.channels import can_publish, can_subscribe, validate_channel, validate_event
from hub.errors import Forbidden, InvalidPayload, NotFound, PayloadTooLarge
from hub.fanout import FanoutQueue
from hub.history import HistoryStore, Message
from hub.presence import PresenceChange, PresenceRegistry

DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024
DEFAULT_MAX_SUBSCRIPTIONS = 100
MAX_BATCH = 100
MAX_HISTORY_LIMIT = 1000
# Publishes to one channel are serialised so that offset order equals queue order; channels share
# a fixed set of locks so memory stays bounded however many channels exist.
_LOCK_STRIPES = 64


@dataclass(frozen=True)
class SubscribeResult:
    """Outcome of a subscription; wait on `ready` before acknowledging so the backlog arrives first."""

    channel: str
    offset: int
    recovered: bool
    epoch: str
    backlog: tuple[Message, ...]
    ready: threading.Event

    def ack(self) -> dict[str, Any]:
        return {
            "ok": True,
            "channel": self.channel,
            "offset": self.offset,
            "recovered": self.recovered,
            "epoch": self.epoch,
        }


@dataclass(frozen=True)
class HistoryPage:
    channel: str
    messages: list[Message]
    complete: bool
    latest: int
    epoch: str


def payload_size(data: Any) -> int:
    """Bytes of `data` as compact UTF-8 JSON; raises InvalidPayload if it is not plain JSON."""
    try:
        encoded = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # TypeError: bytes, sets and other non-JSON values; ValueError: NaN/Infinity; RecursionError: deep nesting.
    except (TypeError, ValueError, RecursionError):
        raise InvalidPayload("data must be plain JSON (no binary, NaN or Infinity)") from None
    return len(encoded.encode())


def _check_offset(name: str, value: object, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidPayload(f"{name} must be a whole number from 0")
    return value


class Hub:
    def __init__(
        self,
        history: HistoryStore,
        presence: PresenceRegistry,
        fanout: FanoutQueue,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
        publish_wait: float = 0.0,
    ) -> None:
        self.history = history
        self.presence = presence
        self.fanout = fanout
        self.max_payload_bytes = max_payload_bytes
        self.max_subscriptions = max_subscriptions
        self.publish_wait = publish_wait
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def _lock_for(self, channel: str) -> threading.Lock:
        return self._locks[hash(channel) % _LOCK_STRIPES]

    def _check_publish(self, channel: object, event: object, data: Any, grants: Iterable[str] | None) -> None:
        validate_channel(channel)
        validate_event(event)
        if grants is not None and not can_publish(grants, channel):  # type: ignore[arg-type]
            raise Forbidden(f"no publish permission on {channel}")
        size = payload_size(data)
        if size > self.max_payload_bytes:
            raise PayloadTooLarge(f"data is {size} bytes, the limit is {self.max_payload_bytes}")

    def _store_and_queue(self, channel: str, event: str, data: Any) -> tuple[Message, threading.Event]:
        with self._lock_for(channel):
            message = self.history.append(channel, event, data)
            handed_over = self.fanout.deliver(message)
        return message, handed_over

    def _pace(self, handed_over: threading.Event) -> None:
        """Backpressure: wait (at most publish_wait) until the fan-out worker has handed the message to every
        subscriber's connection. Writes to connections are buffered, so this waits for the worker, never for a
        slow subscriber; a publisher that would outrun delivery is slowed instead of filling the queue."""
        if self.publish_wait > 0 and self.fanout.running:
            handed_over.wait(self.publish_wait)

    def publish(self, channel: str, event: str, data: Any, *, grants: Iterable[str] | None = None) -> Message:
        """Store and queue one message; it is acknowledged once stored, answering after its fan-out (see _pace).

        `grants` are the caller's publish patterns (a client's token); None means a trusted publisher.
        """
        self._check_publish(channel, event, data, grants)
        self.fanout.admit()
        message, handed_over = self._store_and_queue(channel, event, data)
        self._pace(handed_over)
        return message

    def publish_batch(self, items: Sequence[Mapping[str, Any]]) -> list[Message]:
        """Publish several messages, in order, for a trusted publisher; nothing is stored unless all are valid."""
        if not isinstance(items, Sequence) or isinstance(items, str | bytes) or not 1 <= len(items) <= MAX_BATCH:
            raise InvalidPayload(f"a batch must be a list of 1 to {MAX_BATCH} messages")
        for item in items:
            if not isinstance(item, Mapping):
                raise InvalidPayload("each batch entry must be an object with channel, event and data")
            self._check_publish(item.get("channel"), item.get("event"), item.get("data"), None)
        self.fanout.admit(len(items))
        queued = [self._store_and_queue(item["channel"], item["event"], item.get("data")) for item in items]
        self._pace(queued[-1][1])  # one worker, in order: the last handed over means all were
        return [message for message, _ in queued]

    def subscribe(
        self,
        sid: str,
        sub: str | None,
        grants: Iterable[str],
        channel: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        presence: bool = False,
    ) -> SubscribeResult:
        """Subscribe connection `sid` (user `sub`, None if anonymous) to `channel`.

        With `since`, messages after that offset are queued to the connection ahead of live ones when
        history still holds them all (`recovered`); otherwise nothing is replayed and the client must
        resync. An `epoch` from an earlier ack that no longer matches also means resync.
        """
        validate_channel(channel)
        since = _check_offset("since", since, None)
        if epoch is not None and not isinstance(epoch, str):
            raise InvalidPayload("epoch must be a string")
        if not can_subscribe(grants, channel):
            if sub is None:
                raise Forbidden("anonymous connections may only subscribe to public channels")
            raise Forbidden(f"no subscribe permission on {channel}")
        with self._lock_for(channel):
            change = self.presence.add(sid, sub, channel, max_per_sid=self.max_subscriptions)
            backlog: list[Message] = []
            recovered = False
            try:
                if since is not None:
                    backlog, complete = self.history.since(channel, since)
                    recovered = complete and epoch in (None, self.history.epoch)
                    if not recovered:
                        backlog = []
                offset = self.history.latest(channel)
            except Exception:
                self.presence.remove(sid, channel)  # the subscription did not happen, so neither did its presence
                raise
            if change.announces:
                self.fanout.announce(change)
            ready = self.fanout.attach(sid, channel, backlog, presence=presence)
        return SubscribeResult(channel, offset, recovered, self.history.epoch, tuple(backlog), ready)

    def _announce(self, changes: Iterable[PresenceChange | None]) -> None:
        for change in changes:
            if change is not None and change.announces:
                self.fanout.announce(change)

    def unsubscribe(self, sid: str, channel: str) -> None:
        validate_channel(channel)
        with self._lock_for(channel):
            change = self.presence.remove(sid, channel)
            if change is None:
                raise NotFound(f"not subscribed to {channel}")
            self.fanout.detach(sid, channel)
            self._announce([change])

    def disconnect(self, sid: str) -> list[str]:
        """Forget every subscription of a closed connection; returns the channels it left.

        The transport drops a closed connection from its audiences itself, so nothing is detached here.
        """
        changes = self.presence.remove_sid(sid)
        self._announce(changes)
        return [change.channel for change in changes]

    def read_history(self, channel: str, since: object = None, limit: object = None) -> HistoryPage:
        """Messages after `since` (default 0: all held), at most `limit` (default and cap 1000)."""
        validate_channel(channel)
        offset = _check_offset("since", since, 0)
        count = _check_offset("limit", limit, MAX_HISTORY_LIMIT)
        if not count or count > MAX_HISTORY_LIMIT:
            raise InvalidPayload(f"limit must be from 1 to {MAX_HISTORY_LIMIT}")
        messages, complete = self.history.since(channel, offset, count)
        return HistoryPage(channel, messages, complete, self.history.latest(channel), self.history.epoch)

    def channel_summaries(self) -> list[dict[str, Any]]:
        """Every channel with subscribers or held messages: subscriber count and latest offset."""
        counts = self.presence.counts()
        names = sorted(set(counts) | set(self.history.channels()))
        return [{"channel": n, "subscribers": counts.get(n, 0), "offset": self.history.latest(n)} for n in names]

    def who(self, channel: str) -> dict[str, Any]:
        """Connections to `channel`: total, anonymous, and each named user with their connection count."""
        validate_channel(channel)
        subs = self.presence.who(channel)
        total = self.presence.count(channel)
        return {
            "channel": channel,
            "connections": total,
            "anonymous": total - sum(subs.values()),
            "subscribers": [{"sub": sub, "connections": n} for sub, n in sorted(subs.items())],
        }
