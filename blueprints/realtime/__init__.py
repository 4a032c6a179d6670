"""Realtime delivery: the Socket.IO namespace, the fan-out worker's transport, and the hub services they share."""

from __future__ import annotations

from flask import Flask

from blueprints.realtime.control import LocalUserControl
from blueprints.realtime.namespace import RealtimeNamespace
from blueprints.realtime.services import EXTENSION_KEY, HubServices, build_services, hub_services
from blueprints.realtime.transport import SocketIOTransport
from extensions import socketio

__all__ = ["HubServices", "hub_services", "init_realtime"]

# Readiness fails when the fan-out queue is this full: publishes are about to be refused with 503.
QUEUE_NEARLY_FULL = 0.9


def init_realtime(app: Flask) -> HubServices:
    """Build the hub for `app`, register the '/' namespace and bind the fan-out worker (started on first use)."""
    services = build_services(app.config)
    app.extensions[EXTENSION_KEY] = services
    fanout = services.hub.fanout
    fanout.bind(SocketIOTransport(socketio.server), socketio.start_background_task)
    namespace = RealtimeNamespace("/", services)
    socketio.on_namespace(namespace)
    control = app.extensions["user_control"] = LocalUserControl(namespace, services, app.config["INSTANCE_ID"])
    listener = services.control.bind(control.apply, socketio.start_background_task, control.sweep)
    if listener is not None:  # with REDIS_URL: started by the first request or connection, stopped by the drain
        namespace.on_connected = listener.ensure_started
        app.before_request(listener.ensure_started)
        app.extensions["drain"].add_stop_callback("control listener", listener.stop)

    def fanout_check() -> str | None:
        if fanout.running is False:
            return "fan-out worker stopped"
        if fanout.pending() >= QUEUE_NEARLY_FULL * fanout.max_pending:
            return f"fan-out queue {fanout.pending()}/{fanout.max_pending}"
        return None

    app.extensions["readiness"].add_check("fanout", fanout_check)
    return services
