"""gunicorn out of descriptors: answer 503 + Retry-After and go on, instead of killing the worker or the request.

Two gunicorn 27.0.1 gthread internals need a descriptor per new connection before the application sees it:
- `ThreadWorker.accept` re-raises every accept() error but EAGAIN/ECONNABORTED, so EMFILE leaves the worker's event
  loop with a traceback and the worker dies with every client on it. Replaced by one that, out of descriptors,
  frees one it keeps spare for this, accepts the waiting connection with it, writes a 503 with `Retry-After` and
  `Connection: close`, closes it and takes the spare back (the reserve-descriptor trick of libuv and nginx).
  Without the spare the connection would stay in the backlog and the listener readable, so the loop would spin.
- `TConn.wait_for_data` makes a `selectors.DefaultSelector()` (an epoll descriptor) for every new connection just
  to wait for its first bytes; out of descriptors that fails with an ERROR traceback and the client gets an EOF.
  Replaced by the same wait through poll(2), which needs no descriptor, so the request reaches the application
  (/livez answers; a websocket handshake gets the shared transport's 503).
"""

from __future__ import annotations

import json
import os
import select
import socket
from typing import Any

from gunicorn.workers import gthread

from utils.descriptors import is_exhausted, warn_exhausted

_original_accept = gthread.ThreadWorker.accept
_spare: int | None = None

_BODY = json.dumps({"error": {"code": "service_unavailable",
                              "message": "Server out of connections, retry later"}}).encode()
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\n"
           b"Retry-After: 2\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY))


def _take_spare() -> None:
    global _spare
    if _spare is None:
        try:
            _spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            _spare = None  # still out: the next refusal tries again


def refuse_waiting_connection(listener: socket.socket) -> None:
    """Accept one waiting connection with the spare descriptor, answer it 503 and close it."""
    global _spare
    if _spare is not None:
        os.close(_spare)
        _spare = None
    try:
        client, _ = listener.accept()
    except OSError:
        pass  # gone meanwhile, or another thread took the freed descriptor first
    else:
        with client:
            try:
                client.setblocking(False)
                client.send(REFUSAL)  # a few hundred bytes fit any fresh socket buffer
            except OSError:
                pass  # the client left already
    finally:
        _take_spare()
    warn_exhausted("a connection")


def _accept(self: Any, listener: socket.socket) -> None:
    try:
        _original_accept(self, listener)
    except OSError as exc:
        if not is_exhausted(exc):
            raise
        refuse_waiting_connection(listener)


def _wait_for_data(self: Any, timeout: float | None) -> bool:
    """gunicorn's TConn.wait_for_data (same answers: True once readable, False on timeout or a closed socket)."""
    if self.data_ready:
        return True
    try:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if poller.poll(None if timeout is None else timeout * 1000):
            self.data_ready = True
            return True
        return False
    except (OSError, ValueError):
        return False


def install_descriptor_refusals() -> None:
    """Call in the worker process (gunicorn.conf.py's post_worker_init)."""
    _take_spare()
    gthread.ThreadWorker.accept = _accept  # type: ignore[method-assign]
    gthread.TConn.wait_for_data = _wait_for_data  # type: ignore[method-assign]
