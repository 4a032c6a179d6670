"""The dispatchers that sit in python-engineio's handler slots and around `Server.emit`, calling the observers."""

from __future__ import annotations

import logging
from typing import Any

from engineio.socket import Socket

from integration.observers import SocketObservers
from utils.metrics import DISCONNECT_RACES

log = logging.getLogger(__name__)

_INSTALLED = "_signalboard_lifecycle"


def install_lifecycle(server: Any, observers: SocketObservers) -> None:
    """Put one dispatcher in each of `server.eio`'s connect/message/disconnect slots and one around `server.emit`."""
    eio = server.eio
    if getattr(server, _INSTALLED, None) is not None:
        raise RuntimeError("the Socket.IO lifecycle hooks are already installed on this server")
    # python-socketio registers these three in BaseServer.__init__ (integration/pins.py checks it); anything else in
    # a slot means a second layer wraps it, which is what this package exists to prevent.
    sio_connect, sio_message, sio_disconnect = (eio.handlers.get(name) for name in ("connect", "message",
                                                                                     "disconnect"))
    if (sio_connect, sio_message, sio_disconnect) != (server._handle_eio_connect, server._handle_eio_message,
                                                      server._handle_eio_disconnect):
        raise RuntimeError("python-engineio's handler slots do not hold python-socketio's own handlers")

    # Replaces python-socketio's Engine.IO 'connect' slot: the transport adopts the socket before anyone holds it
    # (python-engineio fires 'connect' after creating the socket, before its first ping), observers see acceptance.
    def connect(eio_sid: str, environ: dict) -> Any:
        if observers.adopter is not None:
            eio_socket = eio.sockets.get(eio_sid)
            if type(eio_socket) is Socket:
                observers.adopter(eio_socket)
        result = sio_connect(eio_sid, environ)
        if result is None or result is True:  # what python-engineio takes as "accepted"
            observers.notify("connect", eio_sid, environ)
        return result

    # Replaces the 'message' slot: the guard may close a session instead of passing a hostile packet on, and a
    # CONNECT that lost the race with its session's disconnect ends quietly (connect_after_disconnect).
    def message(eio_sid: str, data: Any) -> Any:
        def deliver() -> Any:
            observers.notify("message", eio_sid, data)
            try:
                return sio_message(eio_sid, data)
            except KeyError as exc:
                if not connect_after_disconnect(server, eio_sid, exc):
                    raise
                return None

        return deliver() if observers.guard is None else observers.guard(eio_sid, data, deliver)

    # Replaces the 'disconnect' slot: observers learn of every session's end, with its reason.
    def disconnect(eio_sid: str, reason: Any = None) -> Any:
        observers.notify("disconnect", eio_sid, reason)
        return sio_disconnect(eio_sid, reason)

    # Replaces `Server.emit` on this instance: python-socketio has no hook for outgoing events, and every emit
    # (Flask-SocketIO's emit/send included) goes through this method.
    sio_emit = server.emit

    def emit(event: Any, data: Any = None, to: Any = None, room: Any = None, *args: Any, namespace: Any = None,
             **kwargs: Any) -> Any:
        observers.notify("emit", event, namespace, to or room)
        return sio_emit(event, data, to, room, *args, namespace=namespace, **kwargs)

    eio.on("connect", connect)
    eio.on("message", message)
    eio.on("disconnect", disconnect)
    server.emit = emit
    setattr(server, _INSTALLED, (sio_connect, sio_message, sio_disconnect, sio_emit))


def connect_after_disconnect(server: Any, eio_sid: str, exc: KeyError) -> bool:
    """python-socketio's `_handle_connect` registers the namespace member (`manager.pre_connect`) and then reads
    `self.environ[eio_sid]`, which `_handle_eio_disconnect` deletes on another thread once it has left every
    namespace the session was in; a CONNECT running in between raises KeyError(eio_sid) and leaves that new member
    behind. True (and the member removed) for exactly that case."""
    if exc.args != (eio_sid,) or eio_sid in server.environ:
        return False
    manager = server.manager
    for namespace in list(manager.get_namespaces()):
        sid = manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is not None:
            manager.disconnect(sid, namespace, ignore_queue=True)
    DISCONNECT_RACES.labels("connect_race").inc()  # (utils.socketio_error_handler's counter: it imports this package)
    log.debug("disconnected-session race swallowed (connect_race) eio_sid=%s", eio_sid)
    return True


def uninstall_lifecycle(server: Any) -> None:
    """Give python-socketio its own handlers and emit back (tests; python-socketio's admin.py has the same pair)."""
    original = getattr(server, _INSTALLED, None)
    if original is None:
        return
    sio_connect, sio_message, sio_disconnect, sio_emit = original
    server.eio.on("connect", sio_connect)
    server.eio.on("message", sio_message)
    server.eio.on("disconnect", sio_disconnect)
    if getattr(sio_emit, "__func__", None) is type(server).emit:
        del server.emit  # back to the class's own method
    else:
        server.emit = sio_emit
    setattr(server, _INSTALLED, None)
