"""The websocket transport WEBSOCKET_TRANSPORT names, as the adopter integration/lifecycle.py calls at connect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engineio.socket import Socket

from integration.bounded_sockets import BoundedSendQueue, BoundedSocket, bound_socket, create_queues
from integration.shared_sockets import SharedTransport, SinkQueue
from transport.inbound import InboundGate, InboundPolicy
from utils.background import StartTask

WEBSOCKET_TRANSPORTS = ("shared", "threaded")


def build_transport(engineio_server: Any, mode: str, max_buffered: int, start_task: StartTask,
                    inbound_policy: InboundPolicy | None = None,
                    ) -> tuple[SharedTransport | None, Callable[[Socket], None]]:
    """The chosen websocket transport (None for `threaded`) and the function that adopts each new Engine.IO socket;
    `start_task` starts the shared loop's thread (utils.drain.BackgroundTasks.start, so SIGTERM stops it).

    The adopter runs at connect, before python-socketio's handler: the one moment the socket can change class
    before anyone else holds it. `inbound_policy`: what each client may send before a handler thread is started for
    it (transport/inbound.py); None checks nothing.
    """
    if mode not in WEBSOCKET_TRANSPORTS:
        raise ValueError(f"unknown websocket transport {mode!r}")
    if mode == "shared":
        transport = SharedTransport(engineio_server, max_buffered, start_task)
        adopt_class = transport.adopt
        create_queues(engineio_server, SinkQueue)
    else:
        transport = None
        create_queues(engineio_server, BoundedSendQueue)

        def adopt_class(eio_socket: Socket) -> None:
            # Threaded: python-engineio's own socket, with the bounded queue and the remembered websocket.
            bound_socket(eio_socket, BoundedSendQueue, max_buffered)
            eio_socket.__class__ = BoundedSocket

    def adopt(eio_socket: Socket) -> None:
        adopt_class(eio_socket)
        if inbound_policy is not None:
            eio_socket.inbound = InboundGate(inbound_policy)

    return transport, adopt
