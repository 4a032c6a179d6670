"""Engine.IO sessions on the shared loop: python-engineio's websocket path without a thread per connection.

Stock python-engineio in threading mode spends four threads on each websocket: the server thread stuck in
`Socket._websocket_handler`, simple-websocket's reader, python-engineio's writer, and a ping thread that sleeps
one interval. Here every Engine.IO socket is adopted into `SharedSocket` when it connects:

- its ping is a timer on the shared loop instead of a sleeping thread (polling sessions too);
- its outgoing queue is a `SinkQueue`: once the socket is on a websocket, packets skip the queue and its writer
  thread and go straight to the connection, as frames encoded once per broadcast (see transport/frames.py);
- a websocket upgrade answers the handshake itself, takes the TCP connection over from gunicorn and returns the
  gthread thread to the pool; the shared loop reads, parses (wsproto) and runs the Engine.IO upgrade dance.

Event handlers still run in threads of their own, as python-engineio starts them, but those threads are reused
while idle (transport/handler_threads.py) instead of one new thread per packet; only the transport changed.

Hooks, each replacing one python-engineio (or gunicorn) internal; integration/pins.py checks each of them:
- `SharedTransport.adopt`: a live `__class__` swap of the socket python-engineio just created (at connect, from
  integration/lifecycle.py), and its `queue` swapped for a `SinkQueue`.
- `SinkQueue.put`/`attach`: rewrite queue.Queue's `put` under its `mutex` (`_put`, `unfinished_tasks`,
  `all_tasks_done`), so packets skip the writer thread once the socket is on the loop.
- `SharedSocket.schedule_ping`: replaces `Socket.schedule_ping`, whose `_send_ping` thread sleeps one interval per
  session, with a timer on the loop (same `last_ping` rule).
- `SharedSocket._upgrade_websocket`: replaces python-engineio's threaded websocket path; refuses a second upgrade
  with `Server._bad_request`.
- `EngineIOWebSocket._connect_namespace`: calls `Server._trigger_event('message', ..., run_async=False)` so a
  namespace connect is handled to the end before that client's next packet (python-socketio answers CONNECT before
  it marks the client connected).
- `inline_event_handlers`: python-socketio's `Server.start_background_task`, replaced on the instance so an event
  from a shared-loop websocket, already in a thread of its own, runs its handler there (not in a second thread).
- `SharedTransport.take_over`: raises StopIteration, gunicorn gthread's "the application took the connection", and
  swaps the descriptor gunicorn holds (`_take_from_gunicorn`), relying on `util.close_graceful` ignoring ENOTCONN;
  out of descriptors for that, it answers 503 + Retry-After through gunicorn's descriptor instead. Then the
  session's stored environ lets go of gunicorn's request objects and python-engineio's `eventlet.input`
  (integration/session_environ.py).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from typing import Any

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.socket import Socket

from integration.bounded_sockets import BoundedSendQueue, BoundedSocket, bound_socket
from integration.session_environ import slim_environ
from transport import inbound
from transport.frames import HandshakeError, handshake_response, packet_frame
from transport.handler_threads import HandlerThreads
from transport.loop import SharedLoop
from transport.send_bound import SLOW_CONSUMER
from transport.websocket import WebSocketConnection
from utils.admission import refusal
from utils.background import StartTask
from utils.descriptors import is_exhausted, warn_exhausted

log = logging.getLogger(__name__)


class SinkQueue(BoundedSendQueue):
    """An Engine.IO socket's outgoing queue that, once attached to a sink, hands every packet to it at once.

    Engine.IO's Socket.send and Socket.close stay untouched: they put packets (and None, "close") on this queue
    as usual. Attaching moves what is already queued to the sink first, under the queue's own lock, so packets
    keep their order across the switch. Until then (a polling session) the queue's byte bound applies; after, the
    websocket connection's own.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.sink: EngineIOWebSocket | None = None

    def attach(self, sink: EngineIOWebSocket) -> None:
        with self.mutex:
            pending = list(self.queue)
            self.queue.clear()
            self.bytes = 0
            self.unfinished_tasks = 0
            self.all_tasks_done.notify_all()
            for item in pending:
                sink.deliver(item)
            self.sink = sink  # set last: a put() that sees it must not overtake the pending packets

    def detach(self) -> None:
        """The session is over: later packets (there should be none) are dropped, and this queue no longer refers to
        the websocket session, which refers back to the socket that holds this queue: refcounting can free all three
        (with `on_slow`, which refers to the socket too)."""
        with self.mutex:
            self.sink = DROP
            self.on_slow = None

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        sink = self.sink
        if sink is None:
            with self.mutex:
                sink = self.sink
                if sink is None:  # Engine.IO's queues are unbounded, so a plain put never waits
                    self._put(item)
                    self.unfinished_tasks += 1
                    self.not_empty.notify()
                    return
        sink.deliver(item)


class _Drop:
    """A sink for an ended session's queue: packets put after the end go nowhere, as a closed connection drops them."""

    __slots__ = ()

    def deliver(self, item: Any) -> None:
        pass


DROP: Any = _Drop()


class SharedSocket(BoundedSocket):
    """python-engineio's Socket with its ping on the shared timer and its websocket on the shared loop.

    Instances are adopted (their class switched) right after python-engineio creates them; `transport` is set on
    the per-server subclass that SharedTransport makes.
    """

    transport: SharedTransport
    last_ping: float | None  # python-engineio's: when the pending ping went out, None while none is pending

    def schedule_ping(self) -> None:
        # Same rule as python-engineio: one ping cycle at a time, started by the previous pong.
        if self.last_ping:
            self.last_ping = None
            self.transport.loop.call_later(self.server.ping_interval, self._ping_now)

    def _ping_now(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.send(eio_packet.Packet(eio_packet.PING))

    def _upgrade_websocket(self, environ: dict, start_response: Any) -> Any:
        if self.upgrading or self.upgraded:
            # One upgrade per session, refused the same however far the first one got (python-engineio only
            # refuses once the first has finished).
            return self.server._bad_request("Socket is being upgraded or has been upgraded already")
        raw = environ.get("gunicorn.socket")
        if raw is None or isinstance(raw, ssl.SSLSocket):
            # Not under gunicorn (tests with Werkzeug) or TLS terminated by gunicorn: python-engineio's own
            # threaded path knows how to answer those.
            return super()._upgrade_websocket(environ, start_response)
        return self.transport.take_over(self, environ, raw)


class EngineIOWebSocket:
    """The Engine.IO side of one shared-loop websocket: the upgrade dance, then packets in and out."""

    __slots__ = ("socket", "transport", "_conn", "state", "connecting", "held")

    PROBING, UPGRADING, OPEN = "probing", "upgrading", "open"

    def __init__(self, eio_socket: SharedSocket, transport: SharedTransport, upgrading: bool) -> None:
        self.socket = eio_socket
        self.transport = transport
        self._conn: WebSocketConnection | None = None  # set by take_over right after (it needs this handler)
        self.state = self.PROBING if upgrading else self.OPEN
        self.connecting = False  # a Socket.IO namespace connect is being handled; later messages wait
        self.held: list[eio_packet.Packet] = []

    @property
    def conn(self) -> WebSocketConnection:
        if self._conn is None:
            raise RuntimeError(f"{self.socket.sid}: websocket session used before its connection was attached")
        return self._conn

    @conn.setter
    def conn(self, conn: WebSocketConnection) -> None:
        self._conn = conn

    def deliver(self, item: Any) -> None:
        """From SinkQueue: a packet to send, or None when Engine.IO closed the socket."""
        if item is None:
            self.conn.close()
        else:
            self.conn.write(packet_frame(item))

    def attach(self) -> None:
        """The session's packets go to this websocket from now on; broadcasts may append to it directly
        (the transport's `direct` map, integration/broadcast.py)."""
        self.socket.queue.attach(self)
        self.transport.direct[self.socket.sid] = self.conn

    def on_message(self, data: str | bytes) -> None:
        try:
            pkt = eio_packet.Packet(encoded_packet=data)
        except (ValueError, IndexError, KeyError):
            log.debug("%s: undecodable Engine.IO packet, closing", self.socket.sid)
            self.conn.close()
            return
        if self.state == self.OPEN:
            self._receive(pkt)
        elif self.state == self.PROBING and pkt.packet_type == eio_packet.PING and pkt.data == "probe":
            self.conn.write(packet_frame(eio_packet.Packet(eio_packet.PONG, data="probe")))
            self.socket.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the client's pending long-poll
            self.state = self.UPGRADING
        elif self.state == self.UPGRADING and pkt.packet_type == eio_packet.UPGRADE:
            self.socket.upgraded = True
            self.socket.upgrading = False
            self.state = self.OPEN
            self.attach()
        else:
            log.info("%s: failed websocket upgrade, got packet type %s", self.socket.sid, pkt.packet_type)
            self.conn.close()

    def _receive(self, pkt: eio_packet.Packet) -> None:
        if not inbound.admit(self.socket, pkt):
            return  # refused before it costs a thread (transport/inbound.py)
        if pkt.packet_type == eio_packet.PONG:
            self.socket.schedule_ping()  # a timer entry, cheap enough for the loop thread
        elif pkt.packet_type == eio_packet.MESSAGE and self.connecting:
            self.held.append(pkt)
        elif pkt.packet_type == eio_packet.MESSAGE and isinstance(pkt.data, str) and pkt.data[:1] == "0":
            # python-socketio sends the namespace CONNECT answer before it marks the client connected. Over a
            # websocket written without a thread hop, the client's next event (sent the moment it reads that
            # answer) can be handled in that gap and dropped as "not connected". So the connect is handled to
            # the end before anything else this client sent.
            self.connecting = True
            self.transport.handlers.run(self._connect_namespace, pkt)
        elif pkt.packet_type == eio_packet.MESSAGE and self.socket.server.async_handlers:
            self.socket.receive(pkt)  # python-engineio starts the handler thread itself
        else:
            # Anything that may run application code synchronously (a close packet runs the disconnect handler)
            # leaves the loop thread.
            self.transport.handlers.run(self._receive_in_thread, pkt)

    def _connect_namespace(self, pkt: eio_packet.Packet) -> None:
        try:
            # What Socket.receive does for a message, but waiting for the handler instead of starting a thread.
            self.socket.server._trigger_event("message", self.socket.sid, pkt.data, run_async=False)
        finally:
            self.transport.loop.call_soon(self._release_held)

    def _release_held(self) -> None:
        self.connecting = False
        held, self.held = self.held, []
        for index, pkt in enumerate(held):
            self._receive(pkt)
            if self.connecting:  # another namespace connect: the rest waits for it
                self.held = held[index + 1:] + self.held
                return

    def _receive_in_thread(self, pkt: eio_packet.Packet) -> None:
        _RECEIVING.event_thread = True  # this thread may run the packet's event handler (inline_event_handlers)
        try:
            self.socket.receive(pkt)
        except (eio_exceptions.UnknownPacketError, eio_exceptions.SocketIsClosedError):
            pass  # python-engineio's websocket handler ignores both too
        finally:
            _RECEIVING.event_thread = False

    def upgrade_deadline(self) -> None:
        """A client that opened the websocket but never finished the upgrade stays on polling."""
        if self.state != self.OPEN and not self.conn.closed:
            log.info("%s: websocket upgrade not finished in time", self.socket.sid)
            self.conn.close()

    def on_close(self) -> None:
        self.transport.direct.pop(self.socket.sid, None)
        if self.state != self.OPEN:
            self.socket.upgrading = False  # the upgrade failed; the session carries on over polling
            return
        reason = SLOW_CONSUMER if self.conn.slow_consumer else self.socket.server.reason.TRANSPORT_CLOSE
        self.transport.handlers.run(self.transport.end_session, self.socket, reason)


class SharedTransport:
    """Everything one Engine.IO server needs to run its websockets on one shared loop."""

    def __init__(self, engineio_server: Any, max_buffered: int, start_task: StartTask) -> None:
        self.server = engineio_server
        self.max_buffered = max_buffered
        self.loop = SharedLoop(start_task)
        # The threads client packets are handled in (python-engineio would start one per packet): kept while idle.
        self.handlers = HandlerThreads()
        # Sessions whose packets go straight to their websocket (attached sinks), by sid: the broadcast fast path's
        # recipients. Written by attach and on_close; read by broadcasts (a dict lookup is atomic).
        self.direct: dict[str, WebSocketConnection] = {}
        self.socket_class = type("SharedSocket", (SharedSocket,), {"transport": self})

    def adopt(self, eio_socket: Socket) -> None:
        """Turn a socket python-engineio just created (nobody else knows its sid yet) into a SharedSocket."""
        bound_socket(eio_socket, SinkQueue, self.max_buffered)
        eio_socket.__class__ = self.socket_class
        self.loop.ensure_started()

    def take_over(self, eio_socket: SharedSocket, environ: dict, raw: socket.socket) -> Any:
        """Answer the websocket handshake, move the TCP connection to the shared loop, free the gthread thread."""
        try:
            answer = handshake_response(environ)
        except HandshakeError as exc:
            return self.server._bad_request(str(exc))
        upgrading = eio_socket.connected
        try:
            sock = _take_from_gunicorn(raw)
        except OSError as exc:
            if not is_exhausted(exc):
                raise
            return self._out_of_descriptors(eio_socket, upgrading)
        if not upgrading:
            # Counted as a websocket before the client can read the answer: a handshake it sends next must find
            # this one in the admission count.
            eio_socket.connected = True
            eio_socket.upgraded = True
        sock.sendall(answer)  # the same TCP connection gunicorn accepted, still blocking
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = EngineIOWebSocket(eio_socket, self, upgrading)
        session.conn = WebSocketConnection(self.loop, sock, session, self.server.max_http_buffer_size,
                                           self.max_buffered)
        self.loop.call_soon(session.conn.start)
        if upgrading:
            eio_socket.upgrading = True  # python-engineio holds polling sends while this is set
            self.loop.call_later(self.server.ping_interval + self.server.ping_timeout, session.upgrade_deadline)
        else:
            session.attach()  # sends the OPEN packet queued by the handshake
            # The handshake is answered and its connection is ours: the environ python-socketio keeps for the
            # session lets go of gunicorn's objects for this request (integration/session_environ.py).
            slim_environ(environ)
        log.debug("%s: websocket handed to the shared loop (%s)", eio_socket.sid,
                  "upgrade" if upgrading else "direct")
        # gunicorn's gthread worker reads StopIteration as "the application took the connection": it stops
        # serving it and its thread goes back to the pool (simple-websocket's gunicorn mode signals the same).
        raise StopIteration

    def _out_of_descriptors(self, eio_socket: SharedSocket, upgrading: bool) -> dict[str, Any]:
        """No descriptor left to keep the connection: 503 + Retry-After, as admission answers; an upgrading
        session carries on over polling, a direct websocket's session ends here."""
        warn_exhausted("a websocket")
        if not upgrading:
            self.end_session(eio_socket, self.server.reason.SERVER_DISCONNECT)
        status, headers, body = refusal("descriptors")
        return {"status": status, "headers": headers, "response": body}

    def end_session(self, eio_socket: Socket, reason: str) -> None:
        """After the websocket ended: what python-engineio does when its websocket handler returns."""
        eio_socket.close(wait=False, abort=True, reason=reason)
        if self.server.sockets.get(eio_socket.sid) is eio_socket:
            self.server.sockets.pop(eio_socket.sid, None)
        if isinstance(eio_socket.queue, SinkQueue):
            eio_socket.queue.detach()  # no reference cycle left for a full collection to find


_RECEIVING = threading.local()  # event_thread: this thread was started for one shared-loop packet, still unused


def inline_event_handlers(socketio_server: Any) -> None:
    """Replaces python-socketio's `Server.start_background_task` on this instance, for one call only: the thread
    `_handle_event` starts for an event's handler (`async_handlers`), when the event came from a shared-loop
    websocket and is already handled in a thread of its own (`EngineIOWebSocket._receive_in_thread`). The handler
    runs in that thread instead of a second new one: one thread start less per event, and events of one client
    still run concurrently (each packet has its own thread). Every other call goes to python-socketio's."""
    start = socketio_server.start_background_task
    handle_event = type(socketio_server)._handle_event_internal

    def start_background_task(target: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(target, "__func__", None) is handle_event and getattr(_RECEIVING, "event_thread", False):
            _RECEIVING.event_thread = False  # once: a handler that starts a task of its own gets a real thread
            target(*args, **kwargs)
            return None  # python-socketio's _handle_event does not keep the task
        return start(target, *args, **kwargs)

    socketio_server.start_background_task = start_background_task


def _take_from_gunicorn(raw: socket.socket) -> socket.socket:
    """Our own descriptor for the connection, and a harmless one in its place for gunicorn to close.

    A plain dup() would not do: gunicorn closes a finished connection with shutdown(SHUT_WR), which acts on the
    shared TCP socket, not on one descriptor, and would half-close ours too. So the descriptor gunicorn holds is
    pointed at a fresh unconnected socket; its shutdown() then fails with ENOTCONN, which gunicorn ignores.
    """
    ours = socket.socket(fileno=os.dup(raw.fileno()))
    try:
        placeholder = socket.socket(raw.family, socket.SOCK_STREAM)
    except OSError:
        ours.close()  # only our descriptor: the connection stays gunicorn's, to answer on
        raise
    try:
        os.dup2(placeholder.fileno(), raw.fileno(), inheritable=False)
    finally:
        placeholder.close()
    return ours
