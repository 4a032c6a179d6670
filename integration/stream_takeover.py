"""Long-lived HTTP responses (SSE) handed from a gunicorn gthread thread to the shared loop.

A Flask view cannot give its connection away: anything it raises is Flask's to turn into a 500. So the view
answers as usual and leaves a callback in the WSGI environ (`request_takeover`); this middleware, outside Flask,
sees it, sends the response head itself on the raw socket, takes the descriptor from gunicorn the way the shared
websocket transport does (integration/shared_sockets.py `_take_from_gunicorn`) and raises StopIteration, gunicorn
gthread's "the application took the connection" (integration/pins.py checks both), so the thread goes back to the
pool. Without gunicorn (Werkzeug in tests) there is no socket to take: `can_take_over` says so first.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from typing import Any

from integration.shared_sockets import _take_from_gunicorn

TAKEOVER_KEY = "signalboard.takeover"
GUNICORN_SOCKET = "gunicorn.socket"


def can_take_over(environ: dict[str, Any]) -> bool:
    """True under gunicorn, behind StreamTakeover, with a plain TCP socket (TLS terminated by gunicorn cannot move)."""
    raw = environ.get(GUNICORN_SOCKET)
    return raw is not None and not isinstance(raw, ssl.SSLSocket) and TAKEOVER_KEY in environ


def request_takeover(environ: dict[str, Any], head: bytes, receiver: Callable[[Any], None]) -> None:
    """After the view returns: send `head` (status line and headers) and give the socket to `receiver`."""
    # A list shared by reference: python-engineio's middleware hands the app a copy of the environ under gunicorn.
    environ[TAKEOVER_KEY].append((head, receiver))


class StreamTakeover:
    """WSGI middleware doing what request_takeover asked once the app has answered."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        asked: list[tuple[bytes, Callable[[Any], None]]] = []
        if GUNICORN_SOCKET in environ:
            environ[TAKEOVER_KEY] = asked
        result = self.app(environ, start_response)
        if not asked:
            return result
        wanted = asked[0]
        if hasattr(result, "close"):
            result.close()  # Flask's placeholder answer: never sent
        head, receiver = wanted
        raw = environ[GUNICORN_SOCKET]
        try:
            raw.sendall(head)
        except OSError:
            receiver(None)  # the client left before its stream began
            raise StopIteration from None
        receiver(_take_from_gunicorn(raw))
        raise StopIteration
