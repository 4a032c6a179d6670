"""A bound on what waits to be sent to one client: one that stops reading is dropped as a slow consumer.

python-engineio keeps each session's outgoing packets in an unbounded queue.Queue, and its threaded websocket
writer blocks in send() when the client's TCP window is full, so a client that stops reading grows the server's
memory at the publish rate until its ping timeout. Both transports here bound it by bytes: a backlog may pass
WEBSOCKET_SEND_BUFFER for SLOW_CONSUMER_GRACE seconds (a burst the client then catches up on), or up to HARD_LIMIT
times the bound at once; past either, the session ends with the disconnect reason `slow consumer`, counted in
/metrics and logged once at WARNING. `BoundedSendQueue` bounds the Engine.IO queue (polling, and the threaded
websocket's writer); the shared transport's WebSocketConnection applies the same `Backlog` rule to its frame buffer.
"""

from __future__ import annotations

import logging
import queue
import socket
import time
from collections.abc import Callable
from typing import Any

from engineio.socket import Socket

log = logging.getLogger(__name__)

SLOW_CONSUMER = "slow consumer"  # Engine.IO disconnect reason; the metrics label is slow_consumer
SLOW_CONSUMER_GRACE = 5.0  # seconds a backlog may stay over its bound
HARD_LIMIT = 4  # a backlog over this many times its bound ends the session at once


class Backlog:
    """The slow-consumer rule for one client's backlog; the caller serializes calls (it holds its own lock)."""

    __slots__ = ("limit", "over_since")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.over_since: float | None = None

    def too_slow(self, size: int) -> bool:
        """`size` bytes are waiting now: True when the client has been over the bound too long, or is far over."""
        if size <= self.limit:
            self.over_since = None
            return False
        now = time.monotonic()
        if self.over_since is None:
            self.over_since = now
        return size > HARD_LIMIT * self.limit or now - self.over_since > SLOW_CONSUMER_GRACE

    def drained_to(self, size: int) -> None:
        """Some of the backlog was sent: back under the bound, the grace clock starts afresh next time."""
        if size <= self.limit:
            self.over_since = None


def packet_size(item: Any) -> int:
    data = getattr(item, "data", None)
    return len(data) + 1 if isinstance(data, (str, bytes)) else 1


class BoundedSendQueue(queue.Queue):
    """An Engine.IO socket's outgoing queue that counts its bytes and reports a slow consumer once.

    `_put` and `_get` run under the queue's own lock, so `on_slow` must not block or touch this queue.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.bytes = 0
        self.backlog: Backlog | None = None
        self.on_slow: Callable[[int], None] | None = None
        self.dropping = False

    @classmethod
    def taking_over(cls, old: queue.Queue) -> BoundedSendQueue:
        new = cls()
        with old.mutex:
            for item in old.queue:
                new._put(item)
            new.unfinished_tasks = len(new.queue)
        return new

    def bound(self, limit: int, on_slow: Callable[[int], None]) -> None:
        self.backlog, self.on_slow = Backlog(limit), on_slow

    def _put(self, item: Any) -> None:
        if self.dropping and item is not None:
            return  # the session is being ended; nothing more is kept for it (None still wakes its reader)
        self.queue.append(item)
        self.bytes += packet_size(item)
        if self.backlog is not None and not self.dropping and self.backlog.too_slow(self.bytes):
            self.dropping = True
            self.on_slow(self.bytes)

    def _get(self) -> Any:
        item = self.queue.popleft()
        self.bytes -= packet_size(item)
        if self.backlog is not None:
            self.backlog.drained_to(self.bytes)
        return item


class BoundedSocket(Socket):
    """python-engineio's Socket that remembers its threaded websocket, so a slow consumer's blocked writer can be
    woken by shutting the TCP connection."""

    websocket: Any = None

    def _websocket_handler(self, ws: Any, *args: Any, **kwargs: Any) -> Any:
        self.websocket = ws
        try:
            return super()._websocket_handler(ws, *args, **kwargs)
        finally:
            self.websocket = None


def bound_socket(eio_socket: Socket, queue_class: type[BoundedSendQueue], limit: int) -> None:
    """Give a socket python-engineio just created a bounded queue of `queue_class`."""
    bounded = queue_class.taking_over(eio_socket.queue)
    server = eio_socket.server
    bounded.bound(limit, lambda backlog: server.start_background_task(drop_slow_consumer, eio_socket, backlog, limit))
    eio_socket.queue = bounded


def drop_slow_consumer(eio_socket: Socket, backlog: int, limit: int) -> None:
    log.warning("Engine.IO session %s dropped as a slow consumer: %d bytes waiting to be sent (bound %d)",
                eio_socket.sid, backlog, limit)
    eio_socket.close(wait=False, abort=True, reason=SLOW_CONSUMER)
    sock = getattr(getattr(eio_socket, "websocket", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # its writer thread may be blocked in send(): this returns it
        except OSError:
            pass
