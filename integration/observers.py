"""Feature code watches Socket.IO sessions through these lists instead of rewrapping the libraries' handlers.

python-engineio keeps one handler per event and python-socketio fills those slots with its own when the server is
built; python-socketio has no hook at all for outgoing emits. integration/lifecycle.py installs one dispatcher in
each slot (and around `Server.emit`) and calls the observers registered here.

Call order, for every event: the observers of one point run in the order they were registered (the factory's
order), on the thread python-engineio runs the event on, with the arguments below.

- `on_connect(eio_sid, environ)`: after python-socketio accepted the Engine.IO connection (refused ones are not
  reported). Before python-socketio's handler, the one `adopter` (the websocket transport, integration/sockets.py)
  has already turned the new socket into the transport's class.
- `on_message(eio_sid, data)`: after the message guard let the Engine.IO message through, before python-socketio
  handles it.
- `on_disconnect(eio_sid, reason)`: before python-socketio's disconnect handler, for every Engine.IO session.
- `on_emit(event, namespace, to)`: before `Server.emit` sends, for every emit of this process.

Exception policy: an observer that raises is logged at ERROR with its traceback and counted in
`signalboard_observer_errors_total{point}`; the other observers and the library's own handler still run, and the
library sees the result it would have seen without observers. The adopter and the guard are not observers: they
decide what happens to the session, so python-engineio's own policy applies to them (a connect whose adopter raises
is refused and logged by python-engineio as "connect handler error").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from utils.metrics import OBSERVER_ERRORS

log = logging.getLogger(__name__)

POINTS = ("connect", "message", "disconnect", "emit")

Observer = Callable[..., None]
# guard(eio_sid, data, deliver): calls deliver() to let the message reach python-socketio, returns its result.
MessageGuard = Callable[[str, Any, Callable[[], Any]], Any]
Adopter = Callable[[Any], None]


class SocketObservers:
    """The observers of one python-socketio server, plus its one socket adopter and its one message guard."""

    def __init__(self) -> None:
        # Registered from the factory only (one thread), read by every event thread afterwards.
        self._observers: dict[str, list[Observer]] = {point: [] for point in POINTS}
        self.adopter: Adopter | None = None
        self.guard: MessageGuard | None = None

    def on_connect(self, observer: Callable[[str, dict], None]) -> Callable[[str, dict], None]:
        """`observer(eio_sid, environ)` after each accepted Engine.IO connection; usable as a decorator."""
        return self._add("connect", observer)

    def on_message(self, observer: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
        """`observer(eio_sid, data)` for each Engine.IO message the guard lets through."""
        return self._add("message", observer)

    def on_disconnect(self, observer: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
        """`observer(eio_sid, reason)` for each Engine.IO session that ends."""
        return self._add("disconnect", observer)

    def on_emit(self, observer: Callable[[Any, str | None, Any], None]) -> Callable[[Any, str | None, Any], None]:
        """`observer(event, namespace, to)` before each `Server.emit`."""
        return self._add("emit", observer)

    def set_adopter(self, adopter: Adopter) -> None:
        """The one function that turns each new Engine.IO socket into the websocket transport's class."""
        if self.adopter is not None:
            raise RuntimeError("a socket adopter is already installed")
        self.adopter = adopter

    def set_message_guard(self, guard: MessageGuard) -> None:
        """The one function that decides whether an Engine.IO message reaches python-socketio."""
        if self.guard is not None:
            raise RuntimeError("a message guard is already installed")
        self.guard = guard

    def _add(self, point: str, observer: Observer) -> Observer:
        if observer in self._observers[point]:
            return observer  # registering twice (a second factory call on the same server) counts once
        self._observers[point].append(observer)
        return observer

    def notify(self, point: str, *args: Any) -> None:
        """Call every observer of `point`; one that raises is counted and logged, the others still run."""
        for observer in self._observers[point]:
            try:
                observer(*args)
            except Exception:  # noqa: BLE001 - the policy above: an observer never breaks the library
                OBSERVER_ERRORS.labels(point).inc()
                log.exception("Socket.IO %s observer %s failed", point, getattr(observer, "__qualname__", observer))
