"""Signalboard's websocket transport: `WEBSOCKET_TRANSPORT=shared` serves every websocket from one thread.

`threaded` is python-engineio's own path (each websocket holds a gunicorn gthread thread plus three more threads
for its life). `shared` hands each websocket, right after its handshake, to one selector loop (transport/loop.py),
drives every ping from one timer, and encodes each broadcast once; see docs/perf.md for what that buys and
integration/pins.py for the library versions it was written against. Under both, what waits to be sent to one
client is bounded and a client that stops reading is dropped as a slow consumer (transport/send_bound.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from engineio.socket import Socket

from transport.engineio_shared import SharedTransport
from transport.send_bound import BoundedSendQueue, BoundedSocket, bound_socket

log = logging.getLogger(__name__)

TRANSPORTS = ("shared", "threaded")


def build_transport(engineio_server: Any, mode: str,
                    max_buffered: int) -> tuple[SharedTransport | None, Callable[[Socket], None]]:
    """The chosen websocket transport (None for `threaded`) and the function that adopts each new Engine.IO socket.

    integration/ calls the adopter at connect, before python-socketio's handler: the one moment the socket can
    change class before anyone else holds it.
    """
    if mode not in TRANSPORTS:
        raise ValueError(f"unknown websocket transport {mode!r}")
    if mode == "shared":
        transport = SharedTransport(engineio_server, max_buffered)
        return transport, transport.adopt

    def adopt(eio_socket: Socket) -> None:
        bound_socket(eio_socket, BoundedSendQueue, max_buffered)
        eio_socket.__class__ = BoundedSocket

    return None, adopt
