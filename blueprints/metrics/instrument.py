"""Counts Socket.IO sessions and events where python-socketio offers no hook of its own.

Both libraries keep one handler per Engine.IO event, and python-socketio registers its own (`connect`, `message`,
`disconnect`) when the server is built, so the counters wrap those handlers and call straight through: same
arguments, same return value, same thread. Outgoing events have no hook at all; `Server.emit`, the one path every
emit takes (Flask-SocketIO's `emit`/`send` included), is wrapped the same way. Nothing else is changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from utils.metrics import CONNECTS, DISCONNECT_REASONS, DISCONNECTS, EVENTS_RECEIVED, EVENTS_SENT, event_label

# A Socket.IO EVENT (2) or BINARY_EVENT (5, with its attachment count) packet, optional namespace and ack id, then
# the event name as the first element of the JSON array. Only the name is read; the payload is never parsed here.
_EVENT_PACKET = re.compile(r'[25](?:\d+-)?(?:/[^,]*,)?\d*\["([A-Za-z0-9_.:\-]{1,64})"')

_INSTRUMENTED = "_signalboard_instrumented"


def instrument_socketio(server: Any) -> None:
    """Wrap `server`'s Engine.IO handlers and its emit once; a second call for the same server does nothing."""
    if getattr(server, _INSTRUMENTED, False):
        return
    eio = server.eio
    eio.on("connect", _counting_connect(eio.handlers["connect"]))
    eio.on("message", _counting_message(eio.handlers["message"]))
    eio.on("disconnect", _counting_disconnect(eio.handlers["disconnect"]))
    server.emit = _counting_emit(server.emit)
    setattr(server, _INSTRUMENTED, True)


def _counting_connect(handler: Callable[..., Any]) -> Callable[..., Any]:
    def on_connect(eio_sid: str, environ: dict) -> Any:
        result = handler(eio_sid, environ)
        if result is None or result is True:  # what Engine.IO takes as "accepted"
            transport = "websocket" if "transport=websocket" in environ.get("QUERY_STRING", "") else "polling"
            CONNECTS.labels(transport).inc()
        return result

    return on_connect


def _counting_message(handler: Callable[..., Any]) -> Callable[..., Any]:
    def on_message(eio_sid: str, data: Any) -> Any:
        if isinstance(data, str) and data[:1] in ("2", "5"):
            match = _EVENT_PACKET.match(data)
            EVENTS_RECEIVED.labels(event_label(match.group(1)) if match else "other").inc()
        return handler(eio_sid, data)

    return on_message


def _counting_disconnect(handler: Callable[..., Any]) -> Callable[..., Any]:
    def on_disconnect(eio_sid: str, reason: Any = None) -> Any:
        label = str(reason).replace(" ", "_")
        DISCONNECTS.labels(label if label in DISCONNECT_REASONS else "other").inc()
        return handler(eio_sid, reason)

    return on_disconnect


def _counting_emit(emit: Callable[..., Any]) -> Callable[..., Any]:
    def counted_emit(*args: Any, **kwargs: Any) -> Any:
        event = args[0] if args else kwargs.get("event")
        EVENTS_SENT.labels(event_label(str(event))).inc()
        return emit(*args, **kwargs)

    return counted_emit
