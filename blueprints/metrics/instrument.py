"""Counts Socket.IO sessions and events, as observers of the server's lifecycle (integration/observers.py).

Connects (by the transport they opened with), disconnects (by reason), events received (by name, read from the
packet header only) and emits (by event) are counted on the thread the event runs on; nothing else is changed.
"""

from __future__ import annotations

import re
from typing import Any

from extensions import socketio
from integration import SocketObservers
from utils.metrics import (
    CONNECTS,
    DISCONNECT_REASONS,
    DISCONNECTS,
    EVENTS_RECEIVED,
    EVENTS_SENT,
    event_label,
    received_event_label,
)

# A Socket.IO EVENT (2) or BINARY_EVENT (5, with its attachment count) packet, optional namespace and ack id, then
# the event name as the first element of the JSON array. Only the name is read; the payload is never parsed here.
_EVENT_PACKET = re.compile(r'[25](?:\d+-)?(?:(/[^,]*),)?\d*\["([A-Za-z0-9_.:\-]{1,64})"')


def instrument_socketio(observers: SocketObservers) -> None:
    """Register the counters; registering them twice on the same server counts once."""
    observers.on_connect(count_connect)
    observers.on_message(count_message)
    observers.on_disconnect(count_disconnect)
    observers.on_emit(count_emit)


def count_connect(eio_sid: str, environ: dict) -> None:
    engineio_transport = "websocket" if "transport=websocket" in environ.get("QUERY_STRING", "") else "polling"
    CONNECTS.labels(engineio_transport).inc()


def count_message(eio_sid: str, data: Any) -> None:
    if isinstance(data, str) and data[:1] in ("2", "5"):
        match = _EVENT_PACKET.match(data)
        # A name becomes a label only from a session in the event's namespace: names sent before any CONNECT (or
        # to a namespace that refused it) must not take the label cap's places.
        joined = match is not None and socketio.server.manager.sid_from_eio_sid(eio_sid, match.group(1) or "/")
        EVENTS_RECEIVED.labels(received_event_label(match.group(2)) if match is not None and joined else "other").inc()


def count_disconnect(eio_sid: str, reason: Any) -> None:
    label = str(reason).replace(" ", "_")
    DISCONNECTS.labels(label if label in DISCONNECT_REASONS else "other").inc()


def count_emit(event: Any, namespace: str | None, to: Any) -> None:
    EVENTS_SENT.labels(event_label(str(event))).inc()
