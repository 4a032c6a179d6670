"""The hub's operations (publish, subscribe, history, presence) with their checks, for HTTP and Socket.IO to call."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, overload

from hub.channels import can_publish, can_subscribe, validate_channel, validate_event
from hub.errors import Forbidden, InvalidPayload, NotFound, PayloadTooLarge, Unavailable
from hub.events import EventSink, NoEvents
from hub.fanout import Fanout
from hub.history import HistoryStore, Message
from hub.presence import PRESENCE_ANONYMOUS, PRESENCE_SUBS, Presence, PresenceChange

DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024
DEFAULT_MAX_SUBSCRIPTIONS = 100
MAX_BATCH = 100
MAX_CHANNELS = 100  # channels of one multi-channel publish
MAX_HISTORY_LIMIT = 1000
IDEMPOTENCY_KEY_MAX_LENGTH = 128
# Printable ASCII (space to ~): the same rule in every client language and in the OpenAPI document's pattern.
_IDEMPOTENCY_KEY = re.compile(rf"[ -~]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")
# What a Socket.IO sid looks like (python-socketio: 20 URL-safe base64 characters), with room to spare.
_SID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
# Publishes to one channel are serialised so that offset order equals queue order; channels share
# a fixed set of locks so memory stays bounded however many channels exist.
_LOCK_STRIPES = 64
# Why a publish was refused with 503 before it was stored (Hub.refusals).
REFUSAL_REASONS = ("fanout_full", "store_unavailable")


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


def check_message(channel: object, event: object, data: Any, max_payload_bytes: int,
                  grants: Iterable[str] | None = None) -> None:
    """Raise the hub's error if one message may not be published to `channel` (grants None: a trusted publisher)."""
    validate_channel(channel)
    validate_event(event)
    if grants is not None and not can_publish(grants, channel):  # type: ignore[arg-type]
        raise Forbidden(f"no publish permission on {channel}")
    size = payload_size(data)
    if size > max_payload_bytes:
        raise PayloadTooLarge(f"data is {size} bytes, the limit is {max_payload_bytes}")


def check_idempotency_key(key: object) -> str | None:
    """None, or a key of 1 to 128 printable ASCII characters; raises InvalidPayload otherwise."""
    if key is None:
        return None
    if not isinstance(key, str) or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidPayload(f"idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters "
                             "(space to ~)")
    return key


def check_exclude(sid: object) -> str | None:
    """None, or a connection's sid (an unknown sid excludes nobody: it may be on any instance)."""
    if sid is None:
        return None
    if not isinstance(sid, str) or not _SID.fullmatch(sid):
        raise InvalidPayload("exclude must be a connection's sid (the Socket.IO id from its connect answer)")
    return sid


def check_channels(channels: object) -> list[str]:
    """The channels of a multi-channel publish: a list of 1 to 100 distinct valid names."""
    if not isinstance(channels, list | tuple) or not 1 <= len(channels) <= MAX_CHANNELS:
        raise InvalidPayload(f"channels must be a list of 1 to {MAX_CHANNELS} channel names")
    for channel in channels:
        validate_channel(channel)
    if len(set(channels)) != len(channels):
        raise InvalidPayload("channels must not name a channel twice")
    return list(channels)


@dataclass(frozen=True)
class Published:
    """The outcome of one publish request: one message per channel, and whether it named several channels."""

    messages: tuple[Message, ...]
    several: bool

    def answer(self) -> dict[str, Any]:
        """`{channel, offset, id, ts[, duplicate]}` for one channel; `{"results": [...]}` of those for `channels`."""
        if self.several:
            return {"results": [m.answer() for m in self.messages]}
        return self.messages[0].answer()


@overload
def _check_offset(name: str, value: object, default: int) -> int: ...
@overload
def _check_offset(name: str, value: object, default: None) -> int | None: ...
def _check_offset(name: str, value: object, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidPayload(f"{name} must be a whole number from 0")
    return value


class Hub:
    """Built once with its three backends, in memory or on Redis (blueprints.realtime.services chooses)."""

    def __init__(
        self,
        history: HistoryStore,
        presence: Presence,
        fanout: Fanout,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
        publish_wait: float = 0.0,
        events: EventSink | None = None,
        anonymous_presence_subs: bool = False,
    ) -> None:
        self.history = history
        self.presence = presence
        self.fanout = fanout
        self.max_payload_bytes = max_payload_bytes
        self.max_subscriptions = max_subscriptions
        self.publish_wait = publish_wait
        self.anonymous_presence_subs = anonymous_presence_subs
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self.events: EventSink = events or NoEvents()
        # Guards _connections: sid -> (sub, monotonic connect time), for connection.closed's duration.
        self._connections_lock = threading.Lock()
        self._connections: dict[str, tuple[str | None, float]] = {}
        self._refusals_lock = threading.Lock()  # guards _refusals (publishers on many threads)
        self._refusals = dict.fromkeys(REFUSAL_REASONS, 0)

    def _lock_for(self, channel: str) -> threading.Lock:
        return self._locks[hash(channel) % _LOCK_STRIPES]

    def _locks_for(self, channels: Sequence[str]) -> ExitStack:
        """Every stripe lock of `channels`, taken in one global order so two multi-channel publishes cannot
        deadlock."""
        stack = ExitStack()
        for index in sorted({hash(channel) % _LOCK_STRIPES for channel in channels}):
            stack.enter_context(self._locks[index])
        return stack

    def _refused(self, reason: str, count: int) -> None:
        with self._refusals_lock:
            self._refusals[reason] += count

    def refusals(self) -> dict[str, int]:
        """Publishes refused (503, retry), by reason, since start: `fanout_full` (the fan-out queue is at its bound;
        not stored), `store_unavailable` (the history store, Redis, could not be reached, or fewer than
        REDIS_MIN_REPLICAS confirmed the write in time: then it may have been stored)."""
        with self._refusals_lock:
            return dict(self._refusals)

    def _admit(self, count: int) -> None:
        try:
            self.fanout.admit(count)
        except Unavailable:
            self._refused("fanout_full", count)
            raise

    def _store_and_queue(
        self, channels: Sequence[str], event: str, data: Any, key: str | None, exclude: str | None,
        client: tuple[str | None] | None = None,
    ) -> tuple[list[Message], threading.Event | None]:
        """Store in every channel at once and queue what was newly stored; also returns the last queued item's
        event (None if all were duplicates, or the fan-out has nothing to wait for). `client` holds the sub of a
        client publisher (whose new messages raise message.published), None for a trusted one."""
        handed_over = None
        with self._locks_for(channels):
            try:
                messages = self.history.append_all(channels, event, data, idempotency_key=key, exclude=exclude)
            except Unavailable:
                self._refused("store_unavailable", len(channels))
                raise
            for message in messages:
                if not message.duplicate:
                    handed_over = self.fanout.deliver(message, exclude=exclude)
                    if client is not None:
                        self.events.raise_event("message.published", channel=message.channel,
                                                offset=message.offset, id=message.id, sub=client[0])
        return messages, handed_over

    def _pace(self, handed_over: threading.Event | None) -> None:
        """Backpressure: wait (at most publish_wait) until the fan-out worker has handed the message to every
        subscriber's connection. Writes to connections are buffered, so this waits for the worker, never for a
        slow subscriber; a publisher that would outrun delivery is slowed instead of filling the queue."""
        if handed_over is not None and self.publish_wait > 0:
            handed_over.wait(self.publish_wait)

    def publish(
        self,
        channel: object,
        event: object,
        data: Any,
        *,
        grants: Iterable[str] | None = None,
        idempotency_key: object = None,
        exclude: object = None,
        sub: str | None = None,
    ) -> Message:
        """Store and queue one message; it is acknowledged once stored, answering after its fan-out (see _pace).

        `grants` are the caller's publish patterns (a client's token); None means a trusted publisher. A repeated
        `idempotency_key` answers the first message (marked duplicate) and delivers nothing; `exclude` is a
        connection the live delivery skips (history keeps the message for everyone). `sub` is a client
        publisher's user, for message.published. Client values are checked here, whatever their type.
        """
        return self.publish_to([channel], event, data, grants=grants, idempotency_key=idempotency_key,
                               exclude=exclude, sub=sub)[0]

    def publish_to(
        self,
        channels: object,
        event: object,
        data: Any,
        *,
        grants: Iterable[str] | None = None,
        idempotency_key: object = None,
        exclude: object = None,
        sub: str | None = None,
    ) -> list[Message]:
        """publish() to several distinct channels at once, each with its own offset: every channel is checked
        (names, grants, size) before anything is stored, and all are stored in one atomic step, or none."""
        names = check_channels(channels)
        for channel in names:
            check_message(channel, event, data, self.max_payload_bytes, grants)
        event = validate_event(event)
        key = check_idempotency_key(idempotency_key)
        skip = check_exclude(exclude)
        self._admit(len(names))
        client = None if grants is None else (sub,)
        messages, handed_over = self._store_and_queue(names, event, data, key, skip, client)
        self._pace(handed_over)
        return messages

    def publish_request(
        self, body: Mapping[str, Any], *, grants: Iterable[str] | None = None, exclude: str | None = None,
        sub: str | None = None,
    ) -> Published:
        """A publish as clients and the API send it: `channel` or `channels` (not both), `event`, `data` and an
        optional `idempotency_key`."""
        # Any: whatever the wire carried; publish_to checks each of them.
        event: Any = body.get("event")
        key: Any = body.get("idempotency_key")
        if "channels" in body:
            if "channel" in body:
                raise InvalidPayload("send either channel or channels, not both")
            channels: Any = body["channels"]
            messages = self.publish_to(channels, event, body.get("data"), grants=grants, idempotency_key=key,
                                       exclude=exclude, sub=sub)
            return Published(tuple(messages), several=True)
        channel: Any = body.get("channel")
        message = self.publish(channel, event, body.get("data"), grants=grants, idempotency_key=key, exclude=exclude,
                               sub=sub)
        return Published((message,), several=False)

    def publish_batch(self, items: object) -> list[Message]:
        """Publish several messages, in order, for a trusted publisher; nothing is stored unless all are valid.

        Each message may carry its own `idempotency_key`; a repeated one answers as publish() does.
        """
        if not isinstance(items, Sequence) or isinstance(items, str | bytes) or not 1 <= len(items) <= MAX_BATCH:
            raise InvalidPayload(f"a batch must be a list of 1 to {MAX_BATCH} messages")
        for item in items:
            if not isinstance(item, Mapping):
                raise InvalidPayload("each batch entry must be an object with channel, event and data")
            check_message(item.get("channel"), item.get("event"), item.get("data"), self.max_payload_bytes)
            check_idempotency_key(item.get("idempotency_key"))
        self._admit(len(items))
        queued = [
            self._store_and_queue([item["channel"]], item["event"], item.get("data"), item.get("idempotency_key"), None)
            for item in items
        ]
        self._pace(next((done for _, done in reversed(queued) if done is not None), None))  # one worker, in order
        return [messages[0] for messages, _ in queued]

    def subscribe(
        self,
        sid: str,
        sub: str | None,
        grants: Iterable[str],
        channel: object,
        *,
        since: int | None = None,
        epoch: str | None = None,
        presence: bool = False,
    ) -> SubscribeResult:
        """Subscribe connection `sid` (user `sub`, None if anonymous) to `channel`.

        With `since`, messages after that offset are queued to the connection ahead of live ones when
        history still holds them all (`recovered`); otherwise nothing is replayed and the client must
        resync. An `epoch` from an earlier ack that no longer matches also means resync. With `presence`, it gets
        the channel's presence events; an anonymous one without the `sub`s unless `anonymous_presence_subs`.
        """
        channel = validate_channel(channel)
        since = _check_offset("since", since, None)
        if epoch is not None and not isinstance(epoch, str):
            raise InvalidPayload("epoch must be a string")
        if not can_subscribe(grants, channel):
            if sub is None:
                raise Forbidden("anonymous connections may only subscribe to public channels")
            raise Forbidden(f"no subscribe permission on {channel}")
        self.fanout.admit_join()
        with self._lock_for(channel):
            change = self.presence.add(sid, sub, channel, max_per_sid=self.max_subscriptions)
            backlog: list[Message] = []
            recovered = False
            try:
                if since is not None:
                    # Decoding thousands of held messages per recovering client only to have Redis replay them
                    # again was most of a reconnect storm's CPU: a fanout that replays needs the first one only.
                    limit = 1 if self.fanout.replays_backlog else None
                    backlog, complete = self.history.since(channel, since, limit, subscribing=True)
                    recovered = complete and epoch in (None, self.history.epoch)
                    if not recovered:
                        backlog = []
                offset = self.history.latest(channel)
            except Exception:
                self.presence.remove(sid, channel)  # the subscription did not happen, so neither did its presence
                raise
            if change.announces:
                self.fanout.announce(change)
            self._raise_changes([change], "subscribe")
            view = PRESENCE_SUBS if sub is not None or self.anonymous_presence_subs else PRESENCE_ANONYMOUS
            ready = self.fanout.attach(sid, channel, backlog, presence=view if presence else None)
        return SubscribeResult(channel, offset, recovered, self.history.epoch, tuple(backlog), ready)

    def _announce(self, changes: Iterable[PresenceChange], reason: str) -> None:
        for change in changes:
            if change.announces:
                self.fanout.announce(change)
        self._raise_changes(changes, reason)

    def _raise_changes(self, changes: Iterable[PresenceChange], reason: str) -> None:
        """Lifecycle events of subscription changes, in the order a listener expects: occupied before the first
        subscription, vacated after the last. A change without a sid is a crashed instance's connection (reaped)."""
        raise_event = self.events.raise_event
        for change in changes:
            channel, sub = change.channel, change.sub
            if change.joined and change.channel_edge:
                raise_event("channel.occupied", channel=channel)
            if change.sid:
                kind = "subscription.created" if change.joined else "subscription.removed"
                raise_event(kind, sid=change.sid, sub=sub, channel=channel, reason=reason)
            if change.announces:
                raise_event("presence.joined" if change.joined else "presence.left", channel=channel, sub=sub)
            if not change.joined and change.channel_edge:
                raise_event("channel.vacated", channel=channel)

    def unsubscribe(self, sid: str, channel: object, *, reason: str = "unsubscribe") -> None:
        channel = validate_channel(channel)
        with self._lock_for(channel):
            change = self.presence.remove(sid, channel)
            if change is None:
                raise NotFound(f"not subscribed to {channel}")
            self.fanout.detach(sid, channel)
            self._announce([change], reason)

    def connect(self, sid: str, sub: str | None, transport: str) -> None:
        """Note an accepted connection (user `sub`, None if anonymous), for its lifecycle events."""
        with self._connections_lock:
            self._connections[sid] = (sub, time.monotonic())
        self.events.raise_event("connection.opened", sid=sid, sub=sub, transport=transport)

    def disconnect(self, sid: str, reason: str = "disconnect") -> list[str]:
        """Forget every subscription of a closed connection; returns the channels it left.

        The transport drops a closed connection from its audiences itself, so nothing is detached here.
        """
        changes = self.presence.remove_sid(sid)
        self._announce(changes, "disconnect")
        with self._connections_lock:
            known = self._connections.pop(sid, None)
        if known is not None:
            sub, since = known
            self.events.raise_event("connection.closed", sid=sid, sub=sub, reason=reason,
                                    duration_s=round(time.monotonic() - since, 3))
        return [change.channel for change in changes]

    def reaped(self, changes: Iterable[PresenceChange]) -> None:
        """Presence leaves of a crashed instance's connections (Redis presence reaping): announced and raised."""
        self._announce(list(changes), "instance_lost")

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
