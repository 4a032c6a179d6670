"""A Server-Sent Events stream served by the shared loop: frames out through a bounded buffer, reads only for EOF.

Like transport/websocket.py: any thread appends a ready-made frame and puts the stream on the loop's flush list;
the loop thread makes the system calls, watches for writability when the kernel buffer is full, and notices the
client going away (EOF or a reset on read). Frames written before the socket is attached (the recovery backlog,
queued while the request is still being answered) wait in the buffer and leave first. A client that cannot keep
up is dropped as a slow consumer by transport/send_bound.py's rule, exactly as a websocket is.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

from transport.loop import SharedLoop
from transport.send_bound import SLOW_CONSUMER, Backlog
from transport.websocket import READ, READ_WRITE, RECEIVE_BYTES, _close_without_reset, _reason, send_buffered

log = logging.getLogger(__name__)

HEARTBEAT = b": heartbeat\n\n"


def sse_frame(event: str | None, data: Any, event_id: str | None = None, retry_ms: int | None = None) -> bytes:
    """One SSE event: `id:`, `event:`, `retry:` and `data:` (compact JSON, always one line) lines, then a blank one."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


class SseConnection:
    """One SSE response body on the shared loop. `attach()` hands it the socket; `on_close` runs once at the end."""

    __slots__ = ("_loop", "_sock", "_lock", "_out", "_flush_pending", "_closing", "_closed", "_backlog",
                 "_max_buffered", "_watching_writes", "_on_close", "slow_consumer", "reason", "peer")

    def __init__(self, loop: SharedLoop, max_buffered: int, on_close: Callable[[str], None]) -> None:
        self._loop = loop
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # guards _out, _flush_pending, _closing and _closed
        self._out = bytearray()
        self._flush_pending = False
        self._closing = False
        self._closed = False
        self._backlog = Backlog(max_buffered)
        self._max_buffered = max_buffered
        self._watching_writes = False  # loop thread only
        self._on_close = on_close
        self.slow_consumer = False
        self.reason = ""
        self.peer = "local"

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- any thread ---------------------------------------------------------------------------------------------

    def attach(self, sock: socket.socket) -> None:
        """The client's TCP connection, its response headers already sent; the loop serves it from now on."""
        sock.setblocking(False)
        try:
            address = sock.getpeername()
            self.peer = f"{address[0]}:{address[1]}"
        except (OSError, IndexError, TypeError):
            pass
        self._sock = sock
        self._loop.ensure_started()
        self._loop.call_soon(self._start)

    def write(self, data: bytes) -> bool:
        """Queue one frame; False when the stream is closing or gone (the frame is dropped)."""
        with self._lock:
            if self._closing or self._closed:
                return False
            backlog = len(self._out) + len(data)
            if self._sock is not None and self._backlog.too_slow(backlog):
                log.warning("SSE stream %s dropped as a slow consumer: %d bytes waiting to be sent (bound %d)",
                            self.peer, backlog, self._max_buffered)
                self.slow_consumer = self._closing = True
                self.reason = SLOW_CONSUMER  # whichever of the loop's calls ends it, this is why
                self._out.clear()
                self._loop.call_soon(lambda: self._finish(SLOW_CONSUMER))
                return False
            self._out += data
            if self._flush_pending or self._sock is None:
                return True
            self._flush_pending = True
        self._loop.flush_soon(self)
        return True

    def close(self, last: bytes = b"", reason: str = "closed by the server") -> None:
        """Send `last` after what is queued, then end the stream; later writes are dropped."""
        with self._lock:
            if self._closing or self._closed:
                return
            self._out += last
            self._closing = True
            self.reason = reason
            attached = self._sock is not None
        if attached:
            self._loop.call_soon(self.flush)
        else:
            self._finish(reason)

    # ---- loop thread --------------------------------------------------------------------------------------------

    def _start(self) -> None:
        sock = self._sock
        if self._closed or sock is None:
            return
        try:
            self._loop.register(sock, self._on_ready)
        except (ValueError, OSError):
            self._finish("socket unusable")
            return
        self.flush()

    def _on_ready(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self.flush()
        if mask & selectors.EVENT_READ and not self._closed:
            self._read()

    def flush(self) -> None:
        with self._lock:
            self._flush_pending = False
            if self._closed or self._sock is None:
                return
            failure = send_buffered(self._sock, self._out) if self._out else ""
            self._backlog.drained_to(len(self._out))
            backlog = bool(self._out)
            done = not backlog and self._closing
        if failure or done:
            self._finish(failure or self.reason or "closed")
        elif backlog != self._watching_writes:
            self._watching_writes = backlog
            self._loop.modify(self._sock, self._on_ready, READ_WRITE if backlog else READ)

    def _read(self) -> None:
        sock = self._sock
        if sock is None:
            return  # not attached (yet, or any more): nothing to read
        try:
            data = sock.recv(RECEIVE_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            self._finish(f"receive failed: {_reason(exc)}")
            return
        if not data:
            self._finish("end of stream")
        # Anything else the client sends after its request is ignored (SSE is one-way).

    def _finish(self, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = self._closing = True
            self._out.clear()
        self.reason = self.reason or reason
        if self._sock is not None:
            self._loop.unregister(self._sock)
            _close_without_reset(self._loop, self._sock)
        log.debug("SSE stream %s finished: %s", self.peer, reason)
        self._on_close(reason)

    def heartbeat_every(self, seconds: float) -> None:
        """Send a comment line every `seconds` while the stream lives (keeps proxies and the client's timer happy)."""
        def beat() -> None:
            if not self._closed and not self._closing:
                self.write(HEARTBEAT)
                self._loop.call_later(seconds, beat)

        self._loop.call_later(seconds, beat)
