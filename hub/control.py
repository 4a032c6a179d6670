"""Control messages: user-level actions sent to every instance, each applying them to its own connections and answering.

An action is a small JSON object (`{"action": "disconnect", "sub": "alice", ...}`); each instance's applier
returns a JSON result (a count, a list of connections). Without Redis the one applier is called in-process.
With REDIS_URL a request is published on `<prefix>:control` (next to python-socketio's `<prefix>:socketio`);
every web instance's listener applies it and pushes its result onto a reply list named in the request. PUBLISH
answers how many listeners received the request, so the sender knows how many replies to wait for; it waits
at most the reply timeout (CONTROL_REPLY_TIMEOUT_MS) and reports how many instances answered. An instance that
answers late still applies the action: the deadline bounds the answer, not the effect.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.backoff import NoBackoff
from redis.retry import Retry

from hub.errors import Unavailable
from hub.redis_client import CONNECT_TIMEOUT, OUTAGE_ERRORS, RedisKeys, client_for, connect, unavailable_on_outage
from utils.background import Once, StartTask

log = logging.getLogger(__name__)

Apply = Callable[[dict[str, Any]], dict[str, Any]]
# A reply list outlives its request by this much at most, if the sender died before deleting it.
REPLY_EXPIRY_SECONDS = 30
POLL_SECONDS = 1.0
RETRY_MIN_SECONDS = 0.2
RETRY_MAX_SECONDS = 2.0


@dataclass(frozen=True)
class Replies:
    """The results of the instances that answered in time, and how many were asked."""

    results: list[dict[str, Any]]
    expected: int

    @property
    def complete(self) -> bool:
        return len(self.results) >= self.expected

    def coverage(self) -> dict[str, Any]:
        """What an answer says about its own completeness."""
        return {"instances": len(self.results), "complete": self.complete}


class ControlBus(Protocol):
    def request(self, action: dict[str, Any]) -> Replies:
        """Apply `action` on every instance; raises Unavailable when it cannot be sent."""
        ...

    def bind(self, apply: Apply, start_task: StartTask,
             on_subscribed: Callable[[], None]) -> ControlListener | None:
        """Make this process apply requests with `apply`; returns the listener to start, if there is one."""
        ...


class LocalControlBus:
    """One instance, no Redis: the action is applied here and now."""

    def __init__(self) -> None:
        self._apply: Apply | None = None

    def bind(self, apply: Apply, start_task: StartTask,
             on_subscribed: Callable[[], None]) -> ControlListener | None:
        self._apply = apply
        return None  # nothing can be missed in-process, so nothing to catch up on

    def request(self, action: dict[str, Any]) -> Replies:
        if self._apply is None:  # a CLI process without REDIS_URL holds no connections and reaches none
            raise Unavailable("REDIS_URL is not set: without Redis, use the HTTP API of the instance")
        return Replies([self._apply(action)], 1)


class RedisControlBus:
    """Sends requests through Redis (any process); `bind` also makes this process a listener (web instances)."""

    def __init__(self, url: str, keys: RedisKeys, reply_timeout: float) -> None:
        self.url = url
        self.channel = f"{keys.prefix}:control"
        self._reply_prefix = f"{keys.prefix}:control:reply:"
        self.reply_timeout = reply_timeout
        # BLPOP waits up to the reply timeout, so the socket must wait a little longer than that.
        self.client = connect(url, timeout=reply_timeout + 2.0)
        self._listener: ControlListener | None = None

    def bind(self, apply: Apply, start_task: StartTask, on_subscribed: Callable[[], None]) -> ControlListener:
        self._listener = ControlListener(self, apply, start_task, on_subscribed)
        return self._listener

    def request(self, action: dict[str, Any]) -> Replies:
        reply_to = self._reply_prefix + uuid.uuid4().hex
        packet = json.dumps({"reply_to": reply_to, "action": action}, separators=(",", ":"))
        results: list[dict[str, Any]] = []
        with unavailable_on_outage("control request"):
            expected = int(self.client.publish(self.channel, packet))
            deadline = time.monotonic() + self.reply_timeout
            try:
                while len(results) < expected:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    item = self.client.blpop([reply_to], timeout=left)
                    if item is None:
                        break
                    results.append(json.loads(item[1]))
            finally:
                self.client.delete(reply_to)
        if len(results) < expected:
            log.warning("control %s: %d of %d instances answered within %.1fs", action.get("action"),
                        len(results), expected, self.reply_timeout)
        return Replies(results, expected)

    def close(self) -> None:
        self.client.close()


class ControlListener:
    """The listener thread of one web instance: applies each request and replies (started on first use)."""

    TASK = "control listener"

    def __init__(self, bus: RedisControlBus, apply: Apply, start_task: StartTask,
                 on_subscribed: Callable[[], None]) -> None:
        self._bus = bus
        self._apply = apply
        self._start_task = start_task
        self._on_subscribed = on_subscribed  # after each (re)subscription: catch up on what was missed meanwhile
        self._start = Once()
        self._stop = threading.Event()
        self.subscribed = threading.Event()

    def ensure_started(self) -> None:
        if self._start.claim():
            self._start_task(self.TASK, self._run, self.stop)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        retry = RETRY_MIN_SECONDS
        while not self._stop.is_set():
            pubsub = None
            try:
                # No retries inside redis-py: a silent resubscription would skip the catch-up below.
                client = client_for(self._bus.url, socket_timeout=POLL_SECONDS + 5, health_check_interval=5,
                                    socket_connect_timeout=CONNECT_TIMEOUT, retry=Retry(NoBackoff(), 0))
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._bus.channel)
                self.subscribed.set()
                if retry != RETRY_MIN_SECONDS:
                    log.info("control listener subscribed again to %s", self._bus.channel)
                self._on_subscribed()
                retry = RETRY_MIN_SECONDS
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=POLL_SECONDS)
                    if message is not None and message.get("type") == "message":
                        self._handle(message["data"])
            except (*OUTAGE_ERRORS, Unavailable) as exc:
                self.subscribed.clear()
                # One warning per outage; the retries that follow are DEBUG (the reconnect is logged at INFO).
                level = logging.WARNING if retry == RETRY_MIN_SECONDS else logging.DEBUG
                log.log(level, "control listener lost redis (%s); retrying in %.1fs", exc, retry)
                self._stop.wait(retry)
                retry = min(retry * 2, RETRY_MAX_SECONDS)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except OUTAGE_ERRORS:
                        pass  # closing a connection that is already gone
        self.subscribed.clear()
        log.info("control listener stopped")

    def _handle(self, raw: Any) -> None:
        try:
            packet = json.loads(raw)
            action, reply_to = packet["action"], packet["reply_to"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a control message that is not a request")
            return
        try:
            result = self._apply(action)
        # One bad action must not end the listener every other action relies on.
        except Exception:
            log.exception("control action %r failed", action.get("action") if isinstance(action, dict) else None)
            result = {"error": "failed"}
        pipe = self._bus.client.pipeline(transaction=False)
        pipe.rpush(reply_to, json.dumps(result, separators=(",", ":")))
        pipe.expire(reply_to, REPLY_EXPIRY_SECONDS)
        pipe.execute()
