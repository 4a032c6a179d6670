"""gunicorn's gthread worker, with every request's head and body read on its poller thread, never in the pool.

Stock gthread hands a connection to a pool thread as soon as it is accepted or a byte arrives, and that thread then
reads the head and the body with no deadline: 70 connections sending one header byte every 2 s (or 70 slow
`POST /login` bodies) held all 64 threads and `/livez` stopped answering. Here the poller reads what each
connection sends, without blocking, until the head and its body (of a known length, or chunked, up to
PREREAD_BODY_LIMIT) are in; only then does a pool thread get the request, with those bytes handed to gunicorn's own
parser. So:

- a slow head or body costs a descriptor and its bytes, no thread; one not complete within REQUEST_READ_TIMEOUT
  seconds (from the connection's accept, or the first byte of a kept-alive connection's next request) is answered
  408 and closed;
- one address holds at most MAX_CONNECTIONS_PER_ADDRESS connections (refused with 429 at accept); peers in
  TRUSTED_PROXIES are exempt, as every client behind them shares their address (limit them in the proxy);
- bodies over PREREAD_BODY_LIMIT still go to the pool after their head (or their first PREREAD_BODY_LIMIT bytes,
  chunked), as gunicorn reads them (the app refuses oversize bodies from their Content-Length without reading them).
  The poller only finds where a body ends: gunicorn's parser still reads and judges every byte.

With the shared websocket transport, a direct websocket Engine.IO handshake (GET /socket.io/?transport=websocket
without a sid, no body) is not handed to the pool at all: the poller serves it itself (`handle`, then gthread's
`finish_request`, a few between two turns of its loop), since the shared transport answers it without blocking and
takes the connection over; the pool round trip was a large part of a connect's cost.

TLS terminated by gunicorn and HTTP/2 take gunicorn's own path unchanged.
"""

from __future__ import annotations

import errno
import logging
import re
import selectors
import socket
import time
from collections import deque
from concurrent.futures import Future
from functools import partial
from typing import Any
from urllib.parse import parse_qs

from gunicorn.http2 import negotiation
from gunicorn.workers import gthread
from prometheus_client import Counter

from config import load_config
from integration.gunicorn_descriptors import refuse_waiting_connection
from utils.admission import ADMISSION_REFUSALS
from utils.client_address import is_trusted
from utils.descriptors import is_exhausted
from utils.metrics import PREFIX

log = logging.getLogger(__name__)

SLOW_REQUESTS_CLOSED = Counter(f"{PREFIX}_slow_requests_closed", "Connections closed because their request head "
                               "and body were not in within REQUEST_READ_TIMEOUT")

MAX_HEAD_BYTES = 65536  # far above any request our clients send (gunicorn's own limits apply after)
PREREAD_BODY_LIMIT = 1 << 20  # bodies up to this are read before a thread is given (MAX_HTTP_BUFFER_SIZE default)
RECEIVE_BYTES = 65536
ACCEPTS_PER_EVENT = 64  # connections accepted per readiness of a listener, while there are that many waiting
HANDSHAKES_PER_TURN = 4  # direct websocket handshakes the poller serves between two looks at its other connections


def _response(status: str, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n").encode()


TIMEOUT_RESPONSE = _response("408 Request Timeout")
TOO_LARGE_RESPONSE = _response("431 Request Header Fields Too Large")
TOO_MANY_RESPONSE = _response("429 Too Many Requests", "Retry-After: 5\r\n")


CHUNKED = -1  # body_length: the body is chunked (ChunkedBody finds its end)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")  # at most 4 GiB: longer sizes are left to gunicorn's parser
MAX_CHUNK_LINE = 4096  # a chunk-size line (with extensions) or a trailer longer than this is left to gunicorn


def is_direct_websocket_handshake(buffer: bytearray, end: int) -> bool:
    """Whether the request head `buffer[:end]` opens an Engine.IO session straight on a websocket (GET /socket.io/
    with transport=websocket, no sid, an Upgrade: websocket header, no body): what the shared transport answers
    without blocking."""
    line_end = buffer.find(b"\r\n", 0, end)
    if not buffer.startswith(b"GET /socket.io/?") or line_end < 0:
        return False
    query = bytes(buffer[buffer.find(b"?") + 1:buffer.rfind(b" ", 0, line_end)])
    fields = parse_qs(query.decode("latin-1"))
    if fields.get("transport") != ["websocket"] or "sid" in fields:
        return False
    upgrade = chunked_or_sized = False
    for header in bytes(buffer[line_end + 2:end]).split(b"\r\n"):
        name, _, value = header.partition(b":")
        name = name.strip().lower()
        if name == b"upgrade":
            upgrade = value.strip().lower() == b"websocket"
        elif name in (b"content-length", b"transfer-encoding"):
            chunked_or_sized = chunked_or_sized or value.strip() not in (b"0", b"")
    return upgrade and not chunked_or_sized


def body_length(head: bytes) -> int | None:
    """The Content-Length of a complete request head, or CHUNKED; None when the body must be left to gunicorn (a
    length it will refuse itself, another transfer coding)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return CHUNKED if value.strip().lower() == b"chunked" else None
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
    return length if 0 <= length <= PREREAD_BODY_LIMIT else None


class ChunkedBody:
    """Where a chunked body ends, found as its bytes arrive: chunk data is skipped by its size, never scanned."""

    def __init__(self, start: int) -> None:
        self.start = start  # the body's first byte in the buffer
        self.pos = start  # the next chunk-size line (or trailer line) to read
        self.trailers = False  # past the last (zero-size) chunk

    def end(self, buffer: bytearray) -> int | None:
        """The index just past the body once it is all in, else None; ValueError when it is malformed or over
        PREREAD_BODY_LIMIT (gunicorn's parser then reads and answers it, as for any body it reads itself)."""
        while True:
            line_end = buffer.find(b"\r\n", self.pos, self.pos + MAX_CHUNK_LINE)
            if line_end < 0:
                if len(buffer) - self.pos >= MAX_CHUNK_LINE:
                    raise ValueError("chunk line too long")
                return None
            if self.trailers:  # trailer lines, up to the empty line that ends the body
                empty = line_end == self.pos
                self.pos = line_end + 2
                if empty:
                    return self.pos
                if self.pos - self.start > PREREAD_BODY_LIMIT:
                    raise ValueError("body over the pre-read limit")
                continue
            size_text = bytes(buffer[self.pos:line_end]).split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise ValueError("bad chunk size")
            size = int(size_text, 16)
            if size == 0:
                self.pos, self.trailers = line_end + 2, True
                continue
            after = line_end + 2 + size + 2
            if after - self.start > PREREAD_BODY_LIMIT:
                raise ValueError("body over the pre-read limit")
            if len(buffer) < after:
                return None
            if buffer[after - 2:after] != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
            self.pos = after


class ReadingConn(gthread.TConn):
    """gunicorn's connection, with the bytes the poller read for its next request and a close that is counted."""

    def __init__(self, *args: Any, on_close: Any = None, address: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address = address
        self.on_close = on_close
        self.buffer = bytearray()
        self.deadline = 0.0
        self.ready = False  # the buffer holds a whole request: the next enqueue goes to the pool
        self.chunked: ChunkedBody | None = None  # the request being read has a chunked body

    def close(self, graceful: bool = False) -> None:
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close(self)
        super().close(graceful)


class RequestReadingWorker(gthread.ThreadWorker):
    """See the module docstring. Everything here runs on the worker's main (poller) thread; `handle` runs in a pool
    thread, or here for a direct websocket handshake."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = load_config()
        self.read_timeout = float(settings["REQUEST_READ_TIMEOUT"])
        self.max_per_address = settings["MAX_CONNECTIONS_PER_ADDRESS"]
        self.trusted_proxies = settings["TRUSTED_PROXIES"]
        # Only the shared transport answers a websocket handshake without blocking: the threaded one serves the
        # websocket in the handshake's thread for the connection's whole life.
        self.handshakes_here = settings["WEBSOCKET_TRANSPORT"] == "shared"
        self.handshakes: deque[ReadingConn] = deque()  # complete handshake requests waiting to be served here
        self.connections: dict[str, int] = {}  # address -> open connections (poller thread only)
        self.reading: deque[ReadingConn] = deque()  # connections being read, in deadline order
        self._loop_running = False  # run()'s loops are dispatching the method queue (handle_quit)

    # Replaces ThreadWorker.accept: the per-address cap, and the new connection is read here instead of in a thread.
    # Up to ACCEPTS_PER_EVENT connections per readiness of the listener (gunicorn takes one): while the poller also
    # serves handshakes (wait_for_and_dispatch_events), one accept per turn left a storm's connections, and a health
    # check's behind them, in the listen backlog for seconds.
    def accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            if not self._accept_one(listener) or self.nr_conns >= self.worker_connections:
                return

    def _accept_one(self, listener: socket.socket) -> bool:
        """Accept one waiting connection; False when none was waiting (or none could be taken)."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if is_exhausted(exc):  # out of descriptors: 503 with the spare one (integration/gunicorn_descriptors.py)
                refuse_waiting_connection(listener)
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return False
        address = client_addr[0] if isinstance(client_addr, tuple) else str(client_addr)
        if self.cfg.is_ssl:  # gunicorn's own path: the handshake needs a blocking socket in a thread
            self.nr_conns += 1
            client_sock.setblocking(True)
            super().enqueue_req(gthread.TConn(self.cfg, client_sock, client_addr, listener.getsockname()))
            return True
        held = self.connections.get(address, 0)
        if held >= self.max_per_address and not is_trusted(address, self.trusted_proxies):
            ADMISSION_REFUSALS.labels("connections_per_address").inc()
            _send_and_close(client_sock, TOO_MANY_RESPONSE)
            return True
        self.connections[address] = held + 1
        self.nr_conns += 1
        conn = ReadingConn(self.cfg, client_sock, client_addr, listener.getsockname(), on_close=self._closed,
                           address=address)
        self._read_request(conn)
        return True

    # Replaces ThreadWorker.enqueue_req: only a connection whose request is all here gets a thread.
    def enqueue_req(self, conn: Any) -> None:
        if not isinstance(conn, ReadingConn) or conn.ready or conn.is_http2:
            super().enqueue_req(conn)
            return
        self._read_request(conn)

    def _read_request(self, conn: ReadingConn) -> None:
        unreader = getattr(conn.parser, "unreader", None)  # (an HTTP/2 connection has none)
        if unreader is not None:
            conn.buffer += unreader.take_buffered()  # read ahead by the previous request's body
        conn.chunked = None
        conn.sock.setblocking(False)
        conn.deadline = time.monotonic() + self.read_timeout
        self.reading.append(conn)
        if not self._complete(conn):
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _on_readable(self, conn: ReadingConn, _sock: Any) -> None:
        try:
            data = conn.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was in
            self._drop(conn)
            return
        conn.buffer += data
        self._complete(conn, registered=True)

    def _complete(self, conn: ReadingConn, registered: bool = False) -> bool:
        """Hand the connection to the pool when its request is in; True when it left the reading state."""
        end = conn.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.buffer) > MAX_HEAD_BYTES:
                self._drop(conn, TOO_LARGE_RESPONSE)
                return True
            return False
        length = body_length(bytes(conn.buffer[:end]))
        if length == CHUNKED:
            conn.chunked = conn.chunked or ChunkedBody(end + 4)
            try:
                if conn.chunked.end(conn.buffer) is None:
                    return False
            except ValueError:
                pass  # malformed or long: gunicorn's parser reads the rest and answers it
        elif length is not None and len(conn.buffer) < end + 4 + length:
            return False
        if registered:  # before a pool thread owns the socket: the poller must never read it again
            self.poller.unregister(conn.sock)
        self.reading.remove(conn)
        conn.ready = True
        conn.data_ready = True
        if self.handshakes_here and is_direct_websocket_handshake(conn.buffer, end) \
                and not negotiation.prior_knowledge_allowed(self.cfg, conn.client):
            self.handshakes.append(conn)  # served by this thread after the current turn's events
        else:
            super().enqueue_req(conn)
        return True

    # Extends ThreadWorker.wait_for_and_dispatch_events (one turn of the poller, in both of run()'s loops): after the
    # turn's events, up to HANDSHAKES_PER_TURN waiting handshakes are served, and the next turn does not sleep while
    # any wait. A storm of handshakes thus never holds up the other connections' accepts and reads (/livez) for more
    # than a few handshakes' time.
    def wait_for_and_dispatch_events(self, timeout: float | None) -> None:
        super().wait_for_and_dispatch_events(0.0 if self.handshakes else timeout)
        for _ in range(min(len(self.handshakes), HANDSHAKES_PER_TURN)):
            self._handle_here(self.handshakes.popleft())

    def _handle_here(self, conn: ReadingConn) -> None:
        """Serve the request on this (poller) thread, as a pool thread would, and finish it as gthread does when a
        pool thread is done (`finish_request`, given the result as a done future).

        Only for a direct websocket Engine.IO handshake: the shared transport answers it and takes the connection
        over (integration/shared_sockets.py) without blocking, every byte of the request is already read, and so the
        pool round trip (a submit, a thread woken, a done callback back through gthread's method queue, two GIL
        hand-overs) was most of what it cost besides the application itself (docs/perf.md, connect path)."""
        done: Future[Any] = Future()
        done.set_result(self.handle(conn))
        self.finish_request(conn, done)

    def _drop(self, conn: ReadingConn, response: bytes = b"") -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass  # not registered (yet)
        try:
            self.reading.remove(conn)
        except ValueError:
            pass
        self.nr_conns -= 1
        if response:
            try:
                conn.sock.send(response)
            except OSError:
                pass
        conn.close()

    def _closed(self, conn: ReadingConn) -> None:
        # Called from close(), on the poller thread (every close path of gthread runs there).
        held = self.connections.get(conn.address, 0) - 1
        if held > 0:
            self.connections[conn.address] = held
        else:
            self.connections.pop(conn.address, None)

    # Extends ThreadWorker.murder_pending (run by both of its loops, at least once a second): late requests end too.
    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.reading and self.reading[0].deadline <= now:
            conn = self.reading[0]
            SLOW_REQUESTS_CLOSED.inc()
            self._drop(conn, TIMEOUT_RESPONSE if conn.buffer else b"")

    # Replaces ThreadWorker.handle_quit (SIGQUIT, and SIGINT: gunicorn's quick shutdown). gunicorn's runs in the
    # signal handler and calls tpool.shutdown(), which takes the executor's lock; submit() holds that same lock while
    # it starts a new pool thread and waits for it to run, and this poller thread is the one calling submit(). A quit
    # landing there deadlocked the worker until the master killed it at the graceful timeout. The handler now only
    # queues the quit (SimpleQueue.put and a pipe write, safe in a handler); the loop runs it next, with no lock held.
    def handle_quit(self, sig: int, frame: Any) -> None:
        if not self._loop_running:  # nothing can be in submit() yet (or any more): gunicorn's own, at once
            super().handle_quit(sig, frame)
            return
        self.method_queue.defer(partial(super().handle_quit, sig, None))

    # Extends ThreadWorker.run: from here on, the loop is there to run a queued quit.
    def run(self) -> None:
        self._loop_running = True
        try:
            super().run()
        finally:
            self._loop_running = False

    # Extends ThreadWorker.handle (in a pool thread, or on the poller by _handle_here): the bytes read on the poller go
    # to gunicorn's parser first.
    def handle(self, conn: Any) -> Any:
        if isinstance(conn, ReadingConn) and conn.ready:
            conn.ready = False
            conn.sock.setblocking(True)
            conn.init()
            unreader = getattr(conn.parser, "unreader", None)  # (an HTTP/2 connection has none)
            if conn.buffer and unreader is not None and not conn.is_http2:
                unreader.unread(bytes(conn.buffer))
            conn.buffer = bytearray()
        return super().handle(conn)


def _send_and_close(sock: socket.socket, response: bytes) -> None:
    try:
        sock.setblocking(False)
        sock.send(response)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
