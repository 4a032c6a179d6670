"""python-socketio's Redis manager, made to notice and survive Redis outages without losing messages.

The stock RedisManager (python-socketio 5.18.1) retries a lost subscription with a backoff that grows to 60 s,
logs every failed publish at ERROR, and cannot tell anyone whether it is receiving: an instance whose listener
is stuck on a dead connection keeps serving clients that silently get nothing. This subclass keeps the same
wire format and pub/sub channel, and adds:

- a listener that polls (1 s) instead of blocking, reconnects within seconds, and can be told to reconnect;
- catch-up: after every re-subscription it replays from Redis history what local subscribers missed while
  unsubscribed, and drops live copies it already delivered (per-channel offsets only grow, see
  hub.redis_history), so an outage loses nothing that was acknowledged;
- markers: python-socketio `callback` packets addressed to this instance, used to place subscriptions in
  the live order (hub.redis_fanout) and to probe that the listener really receives (utils.redis_health).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import redis
import socketio
from redis.backoff import NoBackoff
from redis.retry import Retry

from hub.errors import Unavailable
from hub.redis_client import CONNECT_TIMEOUT, OUTAGE_ERRORS, client_for
from hub.redis_history import BACKLOG_METHOD, BROADCAST_HOST_ID, RedisHistoryStore
from integration.broadcast import BroadcastManager
from integration.manager import SerializedMembership
from integration.pubsub_packets import SIGNALBOARD_KEY, callback_id, callback_prefix, emit_packet
from utils.background import StartTask
from utils.metrics import FANOUT_LATENCY, MESSAGES_DELIVERED, MESSAGES_PUBLISHED, channel_namespace

log = logging.getLogger(__name__)

# Not a connection id: the key python-socketio files our marker callbacks under, so a client disconnecting
# (which drops its own callbacks) never drops one.
MARKER_SID = "signalboard:marker"
POLL_SECONDS = 1.0
# Told to a channel's subscribers when Redis lost its history under them: subscribe again (with `since` and the
# old epoch: `recovered: false`) and resync.
RESYNC_EVENT = "signalboard:resync"
RETRY_MIN_SECONDS = 0.2
RETRY_MAX_SECONDS = 2.0
_PROBE_EXPIRY_SECONDS = 30.0


class _ListenerStopped(BaseException):
    """Raised in the listener by stop(). A BaseException because python-socketio's PubSubManager._thread retries on
    every Exception, and logs an ERROR when _listen() simply returns."""


# BroadcastManager after RedisManager: right above Manager in the MRO, where PubSubManager._handle_emit's
# super().emit lands (integration/broadcast.py).
class ClusterQueueManager(SerializedMembership, socketio.RedisManager, BroadcastManager):
    """RedisManager with a supervised listener, catch-up after outages and in-order markers (module docstring)."""

    name = "signalboard-redis"
    TASK = "message-queue listener"

    def __init__(self, url: str, channel: str, history: RedisHistoryStore, room_prefix: str,
                 start_task: StartTask) -> None:
        super().__init__(url, channel=channel, logger=logging.getLogger("socketio.server"))
        self.history = history
        self.room_prefix = room_prefix
        self._start_task = start_task  # utils.drain.BackgroundTasks.start: SIGTERM stops the listener
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self.last_marker = 0.0  # monotonic time the listener last ran a marker (probes included)
        # Monotonic time the listener last received a message on its channel, or subscribed (a probe published before
        # that never comes back, so silence counts from then).
        self.last_receive = 0.0
        # Monotonic time a poll last came back empty: the listener had handled everything Redis had sent it. A listener
        # that is behind (starved of CPU, or replaying a catch-up) does not move it, a deaf idle one does.
        self.last_idle = 0.0
        self._reconnect = threading.Event()
        # Written only by the listener thread (live packets, catch-up and markers all run there).
        self._delivered: dict[str, tuple[str, int]] = {}
        self._init_lock = threading.Lock()
        self._initialized = False
        self._markers_lock = threading.Lock()  # a join's backlog is written, or its marker forgotten, not both at once
        # Probes sent recently (monotonic time, marker): one lost with a dropped connection is forgotten later.
        self._probes: deque[tuple[float, str]] = deque()

    # --- lifecycle ----------------------------------------------------------------------------------------

    def initialize(self) -> None:
        """Start the listener once, whether the first client or the health monitor gets here first.

        What PubSubManager.initialize does in threading mode (start `_thread`), but as a background task the drain
        stops; RedisManager's own check only concerns eventlet and gevent.
        """
        with self._init_lock:
            if self._initialized:
                return
            self._initialized = True
        self._start_listener()

    def _start_listener(self) -> None:
        self.thread = self._start_task(self.TASK, self._run_listener, self.stop)

    def _run_listener(self) -> None:
        # `_thread` only catches Exception, so _ListenerStopped (a BaseException) ends it (integration/pins.py).
        try:
            self._thread()  # python-socketio's dispatch loop over _listen()
        except _ListenerStopped:
            log.info("message queue listener stopped")

    def stop(self) -> None:
        """Make the listener return within a poll (POLL_SECONDS); nothing is received after that."""
        self._stopping.set()

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the listener is subscribed: a marker published before that would never come back."""
        return self._subscribed.wait(timeout)

    def listener_alive(self) -> bool:
        thread = getattr(self, "thread", None)
        return thread is not None and thread.is_alive()

    def restart_listener(self) -> None:
        """Start a new listener thread if the old one returned (python-socketio lets it end on a bug)."""
        log.warning("message-queue listener thread ended; starting a new one")
        self._start_listener()

    def reconnect(self) -> None:
        """Ask the listener to drop its connection and subscribe again (it polls this within a second)."""
        self._reconnect.set()

    # --- Redis connections --------------------------------------------------------------------------------

    def _client(self, read_timeout: float, **extra: Any) -> redis.Redis:
        return client_for(
            self.redis_url, socket_timeout=read_timeout, socket_connect_timeout=CONNECT_TIMEOUT,
            socket_keepalive=True, retry=Retry(NoBackoff(), 0), **extra,
        )

    def _redis_connect(self) -> None:
        """Replaces RedisManager's (which also opens the pub/sub): the publishing connection only, failing fast, so a
        publish never hangs; the listener has its own (`_listener_connect`)."""
        self.redis = self._client(2.0)
        self.connected = True

    def _listener_connect(self) -> None:
        # A longer read timeout than publishing: pub/sub replies can queue behind a burst of messages.
        self.pubsub = self._client(10.0, health_check_interval=5).pubsub(ignore_subscribe_messages=True)

    def _publish(self, data: Any) -> Any:
        """Replaces RedisManager's retrying publish, which logs every failure at ERROR: one try, one WARNING."""
        try:
            if not self.connected:
                self._redis_connect()
            return self.redis.publish(self.channel, self.json.dumps(data))  # the server's JSON, as the stock manager
        except OUTAGE_ERRORS as exc:
            # Presence events and the like: best effort during an outage (messages go through history instead).
            log.warning("message queue publish failed: %s", exc)
            self.connected = False
            return None

    def publish_raw(self, packet: str) -> None:
        """Publish an already encoded packet; raises Unavailable during an outage."""
        if not self.connected:
            self._redis_connect()
        try:
            self.redis.publish(self.channel, packet)
        except OUTAGE_ERRORS as exc:
            self.connected = False
            raise Unavailable("message queue unavailable") from exc

    def _close_pubsub(self) -> None:
        self._subscribed.clear()
        if self.pubsub is not None:
            try:
                self.pubsub.close()
            except OUTAGE_ERRORS:
                pass  # closing a connection that is already gone
        self.pubsub = None

    # --- the listener -------------------------------------------------------------------------------------

    def _listen(self) -> Iterator[dict[str, Any]]:
        """Replaces RedisManager._listen (blocking, backoff to 60 s): packets (as dicts) until stop(), polling 1 s,
        reconnecting within seconds and catching up after any failure."""
        retry = RETRY_MIN_SECONDS
        while True:
            if self._stopping.is_set():
                self._close_pubsub()
                raise _ListenerStopped
            try:
                if self._reconnect.is_set() or self.pubsub is None:
                    self._reconnect.clear()
                    self._close_pubsub()
                    self._listener_connect()
                    self.pubsub.subscribe(self.channel)
                    self._subscribed.set()
                    self.last_receive = time.monotonic()
                    log.info("message queue listener subscribed to %s", self.channel)
                    self._reconcile()
                    yield from self._catch_up()
                message = self.pubsub.get_message(timeout=POLL_SECONDS)
                retry = RETRY_MIN_SECONDS
                if message is None:
                    self.last_idle = time.monotonic()
                    continue
                if message.get("type") != "message":
                    continue  # (pongs of redis-py's health checks prove the connection, not the subscription)
                self.last_receive = time.monotonic()
                packet = self._decode(message["data"])
                if packet is not None and packet.get("method") == BACKLOG_METHOD:
                    try:
                        self._send_backlog(packet)
                    except Exception:  # as python-socketio's dispatch does for the packets it handles
                        log.exception("a backlog packet could not be sent")
                elif packet is not None and self._is_new(packet):
                    self._count(packet)
                    yield packet
            except (*OUTAGE_ERRORS, Unavailable) as exc:
                # One warning per outage; the retries that follow are DEBUG (the reconnect is logged at INFO).
                level = logging.WARNING if retry == RETRY_MIN_SECONDS else logging.DEBUG
                log.log(level, "message queue listener lost redis (%s); retrying in %.1fs", exc, retry)
                self._close_pubsub()
                self._stopping.wait(retry)
                retry = min(retry * 2, RETRY_MAX_SECONDS)

    @staticmethod
    def _decode(raw: Any) -> dict[str, Any] | None:
        try:
            packet = json.loads(raw)
        except ValueError:
            log.warning("ignored a message-queue packet that is not JSON")
            return None
        return packet if isinstance(packet, dict) else None

    def _send_backlog(self, packet: dict[str, Any]) -> None:
        """A recovering connection's backlog (hub.redis_history's replay), here if the connection is and its join
        is still awaited: its messages in one write (BroadcastManager.emit_each), still ahead of its join marker.

        A join given up (the subscribe timed out and was answered `unavailable`) forgot its marker: its backlog is
        dropped, or a client subscribing again on the same connection would get it twice. The check and the write
        are one step against forget(), so a backlog is either written before the refusal is answered or not at all.
        """
        room, messages, marker = packet.get("room"), packet.get("messages"), packet.get("marker")
        if not isinstance(room, str) or not isinstance(messages, list) or not isinstance(marker, str):
            return
        if not self.room_members("/", room) and not self.taps.known(room):  # an SSE stream's room is its sid
            return  # held by another instance: nothing to encode here
        with self._markers_lock:
            if callback_id(marker) in self.callbacks.get(MARKER_SID, {}):
                self.emit_each([(event, tuple(args)) for event, *args in messages], "/", room)

    def _is_new(self, packet: dict[str, Any]) -> bool:
        """False for a live message this instance already delivered (during catch-up); records the rest."""
        info = packet.get(SIGNALBOARD_KEY)
        if not isinstance(info, dict):
            return True
        channel, epoch, offset = info.get("channel"), info.get("epoch"), info.get("offset")
        if not isinstance(channel, str) or not isinstance(epoch, str) or not isinstance(offset, int):
            return True  # not one of our numbered messages (history.append_all writes all three)
        self.history.high_water.saw(channel, epoch, offset)  # what a failover must not hand out again
        if not self._has_local_members(channel):
            # Nobody here to deliver to, nothing to catch up later: forget it, so memory follows local channels.
            self._delivered.pop(channel, None)
            return True
        previous = self._delivered.get(channel)
        if previous is not None and previous[0] == epoch and offset <= previous[1]:
            return False
        self._delivered[channel] = (epoch, offset)
        return True

    def _count(self, packet: dict[str, Any]) -> None:
        """The fan-out metrics the in-process worker records (blueprints.realtime.delivery), for this instance."""
        info = packet.get(SIGNALBOARD_KEY)
        if not isinstance(info, dict):
            return
        label = channel_namespace(info["channel"])
        MESSAGES_PUBLISHED.labels(label).inc()
        meta = packet["data"][1] if isinstance(packet.get("data"), list) and len(packet["data"]) > 1 else {}
        if isinstance(meta, dict) and isinstance(meta.get("ts"), int):
            FANOUT_LATENCY.observe(max(0.0, time.time() - meta["ts"] / 1000))
        MESSAGES_DELIVERED.labels(label).inc(len(self.room_members("/", packet["room"])))

    def _has_local_members(self, channel: str) -> bool:
        return bool(self.room_members("/", self.room_prefix + channel))

    def _catch_up(self) -> Iterator[dict[str, Any]]:
        """Packets for what local subscribers missed while this listener was not subscribed."""
        for channel, (epoch, offset) in list(self._delivered.items()):
            if not self._has_local_members(channel):
                del self._delivered[channel]
                continue
            messages, complete = self.history.since(channel, offset)
            if self.history.epoch != epoch:
                log.warning("redis lost the history of %s during the outage; its subscribers are told to resync",
                            channel)
                del self._delivered[channel]
                yield self._resync_packet(channel, offset)
                continue
            if not complete:
                log.warning("catch-up of %s: some messages after offset %d were already evicted", channel, offset)
            if messages:
                log.info("catch-up of %s: replaying %d messages missed during the outage", channel, len(messages))
            for message in messages:
                packet = emit_packet(message.event, [message.data, message.meta()], self.room_prefix + channel,
                                     BROADCAST_HOST_ID, {"channel": channel, "epoch": epoch, "offset": message.offset})
                self._delivered[channel] = (epoch, message.offset)
                self._count(packet)
                yield packet

    def _reconcile(self) -> None:
        """Before catching up: if Redis lost offsets this instance saw (a failover), it starts a new epoch."""
        before = self.history.epoch
        after = self.history.reconcile()
        if after != before:
            log.warning("redis lost offsets this instance saw handed out (failover to a replica behind its master); "
                        "new epoch %s, recovering clients resync", after)

    def _resync_packet(self, channel: str, offset: int) -> dict[str, Any]:
        """`signalboard:resync` to the channel's local subscribers (Socket.IO and SSE alike, as
        blueprints/realtime/stream.py names it): what they hold, up to `offset`, cannot be continued."""
        body = {"channel": channel, "offset": offset, "epoch": self.history.epoch, "reason": "history_lost"}
        return emit_packet(RESYNC_EVENT, [body], self.room_prefix + channel, BROADCAST_HOST_ID, {})

    # --- markers (hub.redis_fanout.JoinMarkers) -------------------------------------------------------------

    # Markers ride python-socketio's own callback machinery: an id from `_generate_ack_id`, filed in `callbacks`
    # under MARKER_SID, run by the listener when the `callback` packet comes back through Redis.
    def _marker_prefix(self, marker_id: int) -> str:
        return callback_prefix(self.host_id, MARKER_SID, marker_id)

    def register(self, channel: str, fn: Callable[[], None]) -> str:
        def reached(latest: int, epoch: str) -> None:
            self.last_marker = time.monotonic()
            previous = self._delivered.get(channel)
            if previous is None or previous[0] != epoch or previous[1] < latest:
                self._delivered[channel] = (epoch, latest)
            fn()

        return self._marker_prefix(self._generate_ack_id(MARKER_SID, reached))

    def forget(self, marker: str) -> None:
        with self._markers_lock:  # not while its backlog is being written (_send_backlog)
            self.callbacks.get(MARKER_SID, {}).pop(callback_id(marker), None)

    def probe(self, on_reached: Callable[[], None]) -> None:
        """Send a marker through Redis to this instance's own listener; raises Unavailable during an outage."""
        def reached(*_: Any) -> None:
            self.last_marker = time.monotonic()
            on_reached()

        now = time.monotonic()
        while self._probes and self._probes[0][0] < now - _PROBE_EXPIRY_SECONDS:
            self.forget(self._probes.popleft()[1])
        marker = self._marker_prefix(self._generate_ack_id(MARKER_SID, reached))
        self._probes.append((now, marker))
        self.publish_raw(marker + "]}")
