"""Every reach into python-engineio, python-socketio, simple-websocket and gunicorn internals, owned in one place.

`install_integration` is called once by the factory (extensions.init_socketio), right after the python-socketio
server is built, and installs the hooks below in this order; each hook says in one line what it replaces and why.
Feature code never touches a library's handler dicts: it registers observers (`on_connect`, `on_disconnect`,
`on_message`, `on_emit`, integration/observers.py documents their order and exception policy) with
`socket_observers(app)`. integration/pins.py pins the library versions and checks every internal listed here, in
every mode, at start-up and in the unit tests.

The hooks, in install order (hook: the library internal it touches; where):
1. pin and internals check: the versions and every internal below; integration/pins.py
2. lifecycle dispatchers: python-engineio's `handlers` connect/message/disconnect slots and python-socketio's
   `Server.emit`; integration/lifecycle.py
3. websocket transport adopter: each new `engineio.socket.Socket` (its `__class__` and `queue`) at connect;
   transport/
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from integration.lifecycle import install_lifecycle
from integration.observers import SocketObservers
from integration.pins import LibraryVersionError, check_libraries

__all__ = ["LibraryVersionError", "SocketObservers", "install_integration", "socket_observers"]

log = logging.getLogger(__name__)

EXTENSION_KEY = "socket_observers"


def install_integration(app: Flask, server: Any) -> SocketObservers:
    """Check the pins, then install every hook on `server` (a bound python-socketio server) in the declared order."""
    from transport import build_transport

    # 1. Before anything touches an internal: refuse to start on libraries the hooks were not written for.
    check_libraries()
    observers = app.extensions[EXTENSION_KEY] = SocketObservers()
    # 2. One dispatcher per Engine.IO handler slot and around Server.emit; everything below goes through them.
    install_lifecycle(server, observers)
    # 3. The websocket transport adopts each new socket first thing at connect (before python-socketio's handler).
    transport, adopter = build_transport(server.eio, app.config["WEBSOCKET_TRANSPORT"],
                                         app.config["WEBSOCKET_SEND_BUFFER"])
    observers.set_adopter(adopter)
    app.extensions["websocket_transport"] = transport
    log.debug("library hooks installed (%s websocket transport)", app.config["WEBSOCKET_TRANSPORT"])
    return observers


def socket_observers(app: Flask) -> SocketObservers:
    """The observer lists of `app`'s Socket.IO server; feature code registers its observers here."""
    return app.extensions[EXTENSION_KEY]
