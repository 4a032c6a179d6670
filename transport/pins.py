"""The library versions and internals the shared websocket transport was written against, checked at start-up.

The transport replaces parts of python-engineio's threading websocket path (send_bound.py wraps one more, under
both transports) and relies on how gunicorn's gthread worker closes a connection. Those are internals, not APIs:
a silent change in any of them could leak sockets or drop messages, so `WEBSOCKET_TRANSPORT=shared` refuses to
start on anything but the versions below and tests/transport/test_pins.py fails loudly when an internal it relies
on moves.
"""

from __future__ import annotations

import inspect
from importlib import metadata

PINNED_VERSIONS = {
    "python-engineio": "4.15.1",
    "python-socketio": "5.18.1",
    "simple-websocket": "1.1.0",
    "gunicorn": "27.0.1",
    "wsproto": "1.3.2",
}


def version_mismatches() -> list[str]:
    """One line per installed library whose version is not the pinned one."""
    problems = []
    for name, pinned in PINNED_VERSIONS.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            problems.append(f"{name} {installed} (transport/ was written for {pinned})")
    return problems


def _source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def _socketio_handle_connect() -> object:
    from socketio import server as sio_server

    return sio_server.Server._handle_connect


def internal_mismatches() -> list[str]:
    """One line per library internal the transport relies on that is not as it was written for."""
    from engineio import base_socket, packet
    from engineio import server as eio_server
    from engineio import socket as eio_socket
    from gunicorn import util as gunicorn_util
    from gunicorn.workers import gthread
    from simple_websocket import ws as simple_websocket_ws
    from socketio import manager
    from wsproto import connection as ws_connection

    checks = [
        # The socket class we adopt: same constructor, the methods we override or call, the state flags we set.
        (list(inspect.signature(base_socket.BaseSocket.__init__).parameters) == ["self", "server", "sid"],
         "engineio BaseSocket.__init__(self, server, sid)"),
        (all(f"self.{flag} = " in _source(base_socket.BaseSocket.__init__)
             for flag in ("queue", "last_ping", "connected", "upgrading", "upgraded", "closing", "closed")),
         "engineio BaseSocket sets queue/last_ping/connected/upgrading/upgraded/closing/closed"),
        (list(inspect.signature(eio_socket.Socket._websocket_handler).parameters) == ["self", "ws"]
         and "ws.send(pkt.encode())" in _source(eio_socket.Socket._websocket_handler)
         and "self.sock = " in _source(simple_websocket_ws.Base.__init__),
         "engineio Socket._websocket_handler(self, ws) writes with ws.send; simple-websocket keeps its socket in "
         "ws.sock (send_bound.py shuts it to free a slow consumer's writer)"),
        (list(inspect.signature(eio_socket.Socket._upgrade_websocket).parameters) == ["self", "environ",
                                                                                       "start_response"],
         "engineio Socket._upgrade_websocket(self, environ, start_response)"),
        ("self.server.start_background_task(self._send_ping)" in _source(eio_socket.Socket.schedule_ping),
         "engineio Socket.schedule_ping starts a thread running _send_ping"),
        ("self.last_ping = time.time()" in _source(eio_socket.Socket._send_ping),
         "engineio Socket._send_ping sets last_ping before sending PING"),
        ("self.queue.put(pkt)" in _source(eio_socket.Socket.send),
         "engineio Socket.send puts packets on self.queue"),
        ("self.queue.put(None)" in _source(eio_socket.Socket.close)
         and "self.queue.join()" in _source(eio_socket.Socket.close),
         "engineio Socket.close ends the writer with queue.put(None) and waits with queue.join()"),
        ("self.upgrading or self.upgraded" in _source(eio_socket.Socket.handle_get_request),
         "engineio Socket.handle_get_request answers NOOP while upgrading or upgraded"),
        ("s = socket.Socket(self, sid)" in _source(eio_server.Server._handle_connect)
         and _source(eio_server.Server._handle_connect).index("s = socket.Socket(self, sid)")
         < _source(eio_server.Server._handle_connect).index("self._trigger_event('connect'")
         < _source(eio_server.Server._handle_connect).index("s.schedule_ping()"),
         "engineio Server._handle_connect creates the socket, then fires 'connect', then schedules the ping"),
        ("self.server._trigger_event('message', self.sid, pkt.data,\n" in _source(eio_socket.Socket.receive),
         "engineio Socket.receive hands a MESSAGE to _trigger_event('message', sid, data, run_async=...)"),
        (_source(_socketio_handle_connect()).index("packet.CONNECT, {'sid': sid}")
         < _source(_socketio_handle_connect()).index("self.manager.connect(sid, namespace)"),
         "socketio Server._handle_connect answers CONNECT before marking the client connected (why we gate)"),
        (not hasattr(packet.Packet, "__slots__"), "engineio Packet instances accept extra attributes"),
        ("eio_pkt = [eio_packet.Packet(" in _source(manager.Manager.emit)
         and "self.server._send_eio_packet(eio_sid, p)" in _source(manager.Manager.emit),
         "socketio Manager.emit sends one shared Engine.IO packet object to every recipient"),
        ("except StopIteration" in _source(gthread.ThreadWorker.handle),
         "gunicorn gthread ThreadWorker.handle treats StopIteration as 'connection taken over'"),
        ("sock.shutdown(socket.SHUT_WR)" in _source(gunicorn_util.close_graceful)
         and "except OSError:\n            return" in _source(gunicorn_util.close_graceful),
         "gunicorn util.close_graceful gives up quietly when shutdown() fails"),
        (list(inspect.signature(ws_connection.Connection.__init__).parameters)[:2] == ["self", "connection_type"],
         "wsproto Connection(connection_type, ...)"),
    ]
    return [what for ok, what in checks if not ok]
