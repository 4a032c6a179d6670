"""Signalboard's websocket transport: `WEBSOCKET_TRANSPORT=shared` serves every websocket from one thread.

`threaded` is python-engineio's own path (each websocket holds a gunicorn gthread thread plus three more threads
for its life). `shared` hands each websocket, right after its handshake, to one selector loop (transport/loop.py),
drives every ping from one timer, and encodes each broadcast once; see docs/perf.md for what that buys and
transport/pins.py for the library versions it was written against. Under both, what waits to be sent to one
client is bounded and a client that stops reading is dropped as a slow consumer (transport/send_bound.py).
"""

from __future__ import annotations

import logging
from typing import Any

from engineio.socket import Socket

from transport.engineio_shared import SharedTransport
from transport.pins import internal_mismatches, version_mismatches
from transport.send_bound import BoundedSendQueue, BoundedSocket, bound_socket

log = logging.getLogger(__name__)

TRANSPORTS = ("shared", "threaded")


class TransportVersionError(RuntimeError):
    """The installed libraries are not the ones the shared transport was written for."""


def install_transport(socketio_server: Any, mode: str, max_buffered: int) -> SharedTransport | None:
    """Install the chosen websocket transport on a bound python-socketio server; None for `threaded`."""
    if mode not in TRANSPORTS:
        raise ValueError(f"unknown websocket transport {mode!r}")
    if mode == "shared":
        problems = version_mismatches() + internal_mismatches()
        if problems:
            raise TransportVersionError("WEBSOCKET_TRANSPORT=shared cannot run on these libraries: "
                                        + "; ".join(problems)
                                        + " (use WEBSOCKET_TRANSPORT=threaded, or update transport/ and its pins)")
        transport = SharedTransport(socketio_server.eio, max_buffered)
        adopt = transport.adopt
    else:
        transport = None

        def adopt(eio_socket: Socket) -> None:
            bound_socket(eio_socket, BoundedSendQueue, max_buffered)
            eio_socket.__class__ = BoundedSocket

    eio = socketio_server.eio
    on_connect = eio.handlers["connect"]

    def adopt_then_connect(sid: str, environ: dict) -> Any:
        # python-engineio fires 'connect' right after creating the socket and before scheduling its first ping,
        # the one moment the socket can change class before anyone else holds it.
        eio_socket = eio.sockets.get(sid)
        if type(eio_socket) is Socket:
            adopt(eio_socket)
        return on_connect(sid, environ)

    eio.handlers["connect"] = adopt_then_connect
    log.debug("%s websocket transport installed", mode)
    return transport
