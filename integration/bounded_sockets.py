"""The Engine.IO socket and queue with the slow-consumer bound (transport/send_bound.py) built in, for both transports.

Hooks, each replacing one python-engineio (or Python queue) internal:
- `BoundedSendQueue._put`/`_get` (queue.Queue's internals, run under its `mutex`): count the bytes waiting, so the
  bound can be applied where Engine.IO's `Socket.send` puts packets (`self.queue.put`).
- `create_queues` replaces `Server.create_queue` (called by `BaseSocket.__init__` only), so each new socket's queue is
  bounded-capable from the start; `bound_socket` bounds it at connect (or swaps in a bounded one, carrying over
  `unfinished_tasks`, for a queue made elsewhere).
- `BoundedSocket._websocket_handler` remembers simple-websocket's `ws` while it runs, so `drop_slow_consumer` can
  shut `ws.sock` and wake a writer blocked in send() (threaded transport).
integration/pins.py checks each of them.
"""

from __future__ import annotations

import logging
import queue
import socket
from collections.abc import Callable
from typing import Any

from engineio.socket import Socket

from integration.session_counts import CountedSocket
from transport import inbound
from transport.send_bound import SLOW_CONSUMER, Backlog, packet_size

log = logging.getLogger(__name__)


class BoundedSendQueue(queue.Queue):
    """An Engine.IO socket's outgoing queue that counts its bytes and reports a slow consumer once.

    `_put` and `_get` run under the queue's own lock, so `on_slow` must not block or touch this queue.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        if maxsize <= 0:
            # Nothing ever waits on not_full in an unbounded queue (put only waits while full), so get()'s
            # not_full.notify() may go to not_empty: at most a spurious wake-up a getter re-checks. One Condition
            # (its deque, lock methods) less for every session the process holds (docs/perf.md, GC pauses).
            self.not_full = self.not_empty
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
        backlog, on_slow = self.backlog, self.on_slow  # both set by bound()
        if backlog is not None and on_slow is not None and not self.dropping and backlog.too_slow(self.bytes):
            self.dropping = True
            on_slow(self.bytes)

    def _get(self) -> Any:
        item = self.queue.popleft()
        self.bytes -= packet_size(item)
        if self.backlog is not None:
            self.backlog.drained_to(self.bytes)
        return item


class BoundedSocket(CountedSocket):
    """python-engineio's Socket that remembers its threaded websocket, so a slow consumer's blocked writer can be
    woken by shutting the TCP connection, and that checks what a client sends before a handler thread is started
    for it (transport/inbound.py); it keeps the session counts true (integration/session_counts.py)."""

    websocket: Any = None
    inbound: Any = None  # an InboundGate, set by the adopter

    def receive(self, pkt: Any) -> None:
        # Replaces Socket.receive's first step: python-engineio starts a handler thread per MESSAGE right after.
        if inbound.admit(self, pkt):
            super().receive(pkt)

    def _websocket_handler(self, ws: Any, *args: Any, **kwargs: Any) -> Any:
        self.websocket = ws
        try:
            return super()._websocket_handler(ws, *args, **kwargs)
        finally:
            self.websocket = None


def create_queues(engineio_server: Any, queue_class: type[BoundedSendQueue]) -> None:
    """Replaces `Server.create_queue` on `engineio_server`, which python-engineio calls once, in `BaseSocket.__init__`,
    for each new session's outgoing queue: that queue is a `queue_class` from the start, so the adopter only bounds
    it instead of building a second queue (three Conditions and a lock each) and moving the first one's packets."""
    engineio_server.create_queue = queue_class


def bound_socket(eio_socket: Socket, queue_class: type[BoundedSendQueue], limit: int) -> None:
    """Bound the queue of a socket python-engineio just created: its own if `create_queues` made it a `queue_class`,
    else a new `queue_class` taking over what it holds."""
    current = eio_socket.queue
    bounded = current if type(current) is queue_class else queue_class.taking_over(current)
    bounded.bound(limit, SlowConsumerDrop(eio_socket, limit))
    eio_socket.queue = bounded


class SlowConsumerDrop:
    """A queue's `on_slow`: drop its session in a background task. One object per session where a closure costs a
    function, its cell tuple and three cells, all traversed by every full garbage collection."""

    __slots__ = ("eio_socket", "limit")

    def __init__(self, eio_socket: Socket, limit: int) -> None:
        self.eio_socket, self.limit = eio_socket, limit

    def __call__(self, backlog: int) -> None:
        self.eio_socket.server.start_background_task(drop_slow_consumer, self.eio_socket, backlog, self.limit)


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
