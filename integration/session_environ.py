"""The environ python-socketio keeps for a shared-loop websocket's whole life, without its handshake's server objects.

python-socketio stores the handshake request's environ for each session (`Server.environ[eio_sid]`, the copy
Flask-SocketIO's middleware makes), and Flask-SocketIO builds every event's request context from it. After the shared
transport has taken the TCP connection over (integration/shared_sockets.py `take_over`), the request is finished,
but that environ still holds gunicorn's objects for it and python-engineio's middleware's wrapper around its socket:
about 30 GC-tracked objects per held session (gunicorn's `Request`, `Response`, body reader chain, `wsgi.errors`
wrapper, early-hints closure; python-engineio's `eventlet.input`, an instance of a class it defines anew for every
request), each one traversed by every full garbage collection (docs/perf.md, issue 20). `slim_environ` replaces
them in place, keeping every CGI variable and every key the application set: `wsgi.input` reads as an empty body
(what a GET handshake has), `wsgi.errors` is the process's stderr, and the socket, its wrapper and the early-hints
callback (meaningless once the connection is ours) are gone.
"""

from __future__ import annotations

import sys
from typing import Any

# Set by gunicorn for its request (the socket, already pointed at a placeholder by take_over) and by python-engineio's
# middleware (`eventlet.input`: its per-request `Input` class around that socket), gunicorn's 103 callback.
DROPPED_KEYS = ("gunicorn.socket", "eventlet.input", "wsgi.early_hints")


class EmptyInput:
    """`wsgi.input` of a request whose body was read (or never sent): every read is empty. Stateless, so one serves
    every session."""

    __slots__ = ()

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> EmptyInput:
        return self

    def __next__(self) -> bytes:
        raise StopIteration


EMPTY_INPUT = EmptyInput()


def slim_environ(environ: dict[str, Any]) -> None:
    """Drop the finished handshake's server objects from `environ`, in place (the dict python-socketio keeps)."""
    for key in DROPPED_KEYS:
        environ.pop(key, None)
    environ["wsgi.input"] = EMPTY_INPUT
    environ["wsgi.errors"] = sys.stderr
