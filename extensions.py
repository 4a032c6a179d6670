"""The shared objects every module imports; created unbound here and bound to an app by the factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request
from flask_socketio import SocketIO

from integration import install_integration

socketio = SocketIO()


def init_socketio(app: Flask) -> None:
    """Bind the shared SocketIO to `app`: threading mode (gunicorn gthread), pings and CORS from config."""
    origins: Any = list(app.config["CORS_ALLOWED_ORIGINS"])
    # With `*` every Origin is echoed back: it must not come with Access-Control-Allow-Credentials, or any page on
    # the web could make a browser open a session carrying its cookies and read the answers.
    credentials = "*" not in origins
    if "*" in origins:
        origins = "*"  # only when configured explicitly
    elif not origins:
        origins = None  # python-engineio's default: same origin only
    # Binds it and installs every library hook, in its declared order (integration/).
    install_integration(
        app,
        socketio,
        async_mode="threading",
        ping_interval=app.config["PING_INTERVAL"],
        ping_timeout=app.config["PING_TIMEOUT"],
        max_http_buffer_size=app.config["MAX_HTTP_BUFFER_SIZE"],
        cors_allowed_origins=origins,
        cors_credentials=credentials,
        # Their own logger objects, so levels and filters set in utils.logging_setup apply (logger=False would hide
        # them behind a private handler instead).
        logger=logging.getLogger("socketio.server"),
        engineio_logger=logging.getLogger("engineio.server"),
    )


def client_sid() -> str:
    """The sid of the Socket.IO client whose event is being handled (Flask-SocketIO sets `request.sid`, an attribute
    Flask's Request type does not declare)."""
    sid: str = request.sid  # type: ignore[attr-defined]
    return sid
