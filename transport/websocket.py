"""A websocket served by the shared loop: wsproto parses what arrives, frames are sent at once or from a bounded buffer.

Any thread may write. When nothing is buffered and no flush is pending (the common case) the frame is written
through: sent at once, from the writing thread, under the connection's lock, with a non-blocking send(). Only what
the kernel does not take is appended to the connection's buffer, and the connection is put on the loop's flush
list; frames that pile up behind it wait in that buffer (order is kept: nothing is sent directly while anything is
buffered) and leave in one send() per loop turn, the loop watching for writability while the kernel buffer is
full. A send error is never raised to the writer: the frames are dropped and the loop thread ends the connection.
The loop thread also reads, runs the close handshake, and writes its own frames (pings, pongs, close) through the
same lock and buffer. A client that cannot keep up is dropped as a slow consumer by the rule in
transport/send_bound.py (its backlog stayed over `max_buffered` bytes too long, or went far over).
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
from typing import Protocol

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from transport.loop import SharedLoop
from transport.send_bound import Backlog

log = logging.getLogger(__name__)

READ = selectors.EVENT_READ
READ_WRITE = selectors.EVENT_READ | selectors.EVENT_WRITE
RECEIVE_BYTES = 65536
CLOSE_GRACE_SECONDS = 5.0  # how long a client gets to answer our close frame before the TCP connection is cut
LINGER_SECONDS = 2.0  # how long a finished connection still reads (and drops) what arrives, so its close sends no RST


class MessageHandler(Protocol):
    def on_message(self, data: str | bytes) -> None:
        """A whole message arrived (called on the loop thread)."""

    def on_close(self) -> None:
        """The connection is gone, whoever ended it (called once, on the loop thread)."""


class _Finished:
    """The handler of a finished connection: nothing reaches it (messages stop at the close, on_close ran)."""

    __slots__ = ()

    def on_message(self, data: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        pass


FINISHED: MessageHandler = _Finished()


def _reason(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc))


def send_buffered(sock: socket.socket, out: bytearray) -> str:
    """Send what the kernel takes of `out` and drop it from the buffer; "" or why the send failed (a failed send
    drops everything: the connection is finished)."""
    try:
        sent = sock.send(out)
    except BlockingIOError:
        return ""
    except OSError as exc:
        del out[:]
        return f"send failed: {_reason(exc)}"
    del out[:sent]
    return ""


class WebSocketConnection:
    """One accepted websocket on the shared loop. `start()` must run on the loop thread (use call_soon)."""

    __slots__ = ("_loop", "_sock", "_handler", "_ws", "_lock", "_out", "_flush_pending", "_close_requested",
                 "_close_sent", "_closed", "_parts", "_parts_size", "_max_message", "_max_buffered",
                 "_watching_writes", "_backlog", "slow_consumer", "peer")

    def __init__(self, loop: SharedLoop, sock: socket.socket, handler: MessageHandler, max_message: int,
                 max_buffered: int) -> None:
        self._loop = loop
        self._sock = sock
        self._handler = handler
        self._ws = Connection(ConnectionType.SERVER)  # touched on the loop thread only
        # Guards _out, _flush_pending, _close_requested, _close_sent and _closed.
        self._lock = threading.Lock()
        self._out = bytearray()
        self._flush_pending = False
        self._close_requested = False
        self._close_sent = False
        self._closed = False
        self._parts: list[str | bytes] = []
        self._parts_size = 0
        self._max_message = max_message
        self._max_buffered = max_buffered
        self._watching_writes = False  # loop thread only
        self._backlog = Backlog(max_buffered)
        self.slow_consumer = False  # set when it was dropped for not reading
        try:
            address = sock.getpeername()
        except OSError:
            address = None
        self.peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else "local"

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- any thread ---------------------------------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Send one ready-made frame (written through, or queued behind what is buffered); False when the
        connection is closing or gone (the frame is dropped)."""
        queued = self.queue_frames(data)
        if queued:
            self._loop.flush_soon(self)
        return queued is not None

    def queue_frames(self, data: bytes) -> bool | None:
        """Send ready-made frames like write() but leave the loop's flush to the caller.

        True: (part of) the frames wait in the buffer and the caller must have the loop flush this connection
        (SharedLoop.flush_all), as nothing was pending. False: they were sent (written through), or queued behind a
        flush already pending. None: dropped (closing, gone, a send error, or a slow consumer now).
        """
        with self._lock:
            if self._close_requested or self._closed:
                return None
            out = self._out
            if not out and not self._flush_pending:
                # Written through (the hot path of a broadcast, so no helper call): one non-blocking send().
                try:
                    sent = self._sock.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._send_failed(f"send failed: {_reason(exc)}")
                    return None
                if sent == len(data):
                    return False
                data = data[sent:]
            # The slow-consumer rule only has work to do over the bound (or to reset a grace clock once under it).
            if (len(out) + len(data) > self._max_buffered or self._backlog.over_since is not None) \
                    and self._over_bound(len(data)):
                return None
            out += data
            if self._flush_pending:
                return False
            self._flush_pending = True
            return True

    def _send_failed(self, failure: str) -> None:
        """A written-through send failed (under _lock): later frames are dropped and the loop ends the connection,
        so no exception reaches the writing thread and the handler hears of it on the loop thread, as usual."""
        self._close_requested = True
        self._out.clear()
        self._loop.call_soon(lambda: self._finish(failure))

    def _over_bound(self, adding: int) -> bool:
        """The slow-consumer rule for a frame about to be queued (under _lock): True when the client was dropped."""
        backlog = len(self._out) + adding
        if not self._backlog.too_slow(backlog):
            return False
        log.warning("websocket %s dropped as a slow consumer: %d bytes waiting to be sent (bound %d)",
                    self.peer, backlog, self._max_buffered)
        self.slow_consumer = self._close_requested = True
        self._out.clear()
        self._loop.call_soon(lambda: self._finish("slow consumer"))
        return True

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str | None = None) -> None:
        """Flush what is queued, then run the close handshake; later writes are dropped."""
        with self._lock:
            if self._close_requested or self._closed:
                return
            self._close_requested = True
        self._loop.call_soon(lambda: self._send_close(code, reason))

    # ---- loop thread --------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            return
        try:
            self._loop.register(self._sock, self._on_ready)
        except (ValueError, OSError):
            self._finish("socket unusable")  # closed before the loop got to it

    def _on_ready(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self.flush()
        if mask & selectors.EVENT_READ and not self._closed:
            self._read()

    def flush(self) -> None:
        """Send what is buffered; watch for writability while the kernel cannot take it all."""
        with self._lock:
            self._flush_pending = False
            if self._closed:
                return
            failure = send_buffered(self._sock, self._out) if self._out else ""
            self._backlog.drained_to(len(self._out))
            backlog = bool(self._out)
            handshake_done = not backlog and self._close_sent and self._ws.state.name == "CLOSED"
        if failure or handshake_done:
            self._finish(failure or "closed")
        elif backlog != self._watching_writes:
            self._watching_writes = backlog
            self._loop.modify(self._sock, self._on_ready, READ_WRITE if backlog else READ)

    def _send_control(self, frame: bytes) -> None:
        """Control frames bypass the closing check (they are how a close is said) but keep the buffer's order, and
        count against the send bound like any frame: a client that sends PINGs and never reads their PONGs is a
        slow consumer too."""
        with self._lock:
            if self._closed or (not self._close_requested and self._over_bound(len(frame))):
                return
            self._out += frame
            if self._ws.state.name in ("LOCAL_CLOSING", "CLOSED"):
                self._close_sent = True
        self.flush()

    def _send_close(self, code: int, reason: str | None) -> None:
        if self._closed or self._close_sent:
            return
        try:
            frame = self._ws.send(CloseConnection(code=code, reason=reason))
        except LocalProtocolError:
            self._finish("closed")
            return
        self._send_control(frame)
        self._loop.call_later(CLOSE_GRACE_SECONDS, lambda: self._finish("close handshake timed out"))

    def _read(self) -> None:
        try:
            data = self._sock.recv(RECEIVE_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            self._finish(f"receive failed: {_reason(exc)}")
            return
        if not data:
            self._finish("end of stream")
            return
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                if not self._on_event(event):
                    return
        except LocalProtocolError:
            self._finish("protocol error")

    def _on_event(self, event: object) -> bool:
        """Handle one wsproto event; False once the connection is finished."""
        if isinstance(event, (TextMessage, BytesMessage)):
            # bytes() keeps bytes as they are and copies a bytearray, so what is kept cannot change under us.
            self._parts.append(event.data if isinstance(event.data, str) else bytes(event.data))
            self._parts_size += len(event.data)
            if self._parts_size > self._max_message:
                self._parts, self._parts_size = [], 0
                self.close(CloseReason.MESSAGE_TOO_BIG, "Message is too big")
                return True
            if event.message_finished:
                parts, self._parts, self._parts_size = self._parts, [], 0
                message = parts[0] if len(parts) == 1 else _joined(parts)
                if not self._close_requested:
                    self._handler.on_message(message)
        elif isinstance(event, Ping):
            self._send_control(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if self._ws.state.name == "REMOTE_CLOSING":  # the client spoke first: answer, then hang up
                with self._lock:
                    self._close_requested = True
                self._send_control(self._ws.send(event.response()))
            if not self._closed:
                self._finish("closed by client")
            return False
        return True

    def _finish(self, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_requested = True
            self._out.clear()
        log.debug("websocket %s finished: %s", self.peer, reason)
        self._loop.unregister(self._sock)
        _close_without_reset(self._loop, self._sock)
        handler, self._handler = self._handler, FINISHED
        # The handler usually refers back to this connection: letting go of it here lets refcounting free both
        # once the last writer does, instead of a full garbage collection (docs/perf.md, GC pauses).
        handler.on_close()


def _close_without_reset(loop: SharedLoop, sock: socket.socket) -> None:
    """Close a socket the way a polite server does (on the loop thread).

    Closing a socket with bytes still unread makes the kernel answer with a TCP reset, and a client's last frames
    (its close frame, an Engine.IO close packet sent just before) often arrive right after we decided to close; a
    proxy in front then logs the reset as an error. So: send our FIN, read and discard until the peer's FIN or for
    LINGER_SECONDS at most, then close.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        sock.close()  # already reset or never connected: nothing to be polite to
        return

    def close() -> None:
        if sock.fileno() != -1:
            loop.unregister(sock)
            sock.close()

    def discard(_mask: int) -> None:
        try:
            if sock.recv(RECEIVE_BYTES):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        close()

    loop.register(sock, discard)
    loop.call_later(LINGER_SECONDS, close)


def _joined(parts: list[str | bytes]) -> str | bytes:
    """One message from its fragments: all text or all bytes, as a message never mixes the two."""
    if isinstance(parts[0], str):
        return "".join(part for part in parts if isinstance(part, str))
    return b"".join(part for part in parts if isinstance(part, bytes))
