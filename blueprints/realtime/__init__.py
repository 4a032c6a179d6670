"""Realtime delivery: the Socket.IO namespace, the fan-out worker's emits to rooms, and the hub services they share."""

from __future__ import annotations

from flask import Flask

from blueprints.realtime.control import LocalUserControl
from blueprints.realtime.namespace import RealtimeNamespace
from blueprints.realtime.services import EXTENSION_KEY, HubServices, build_services, hub_services
from blueprints.realtime.stream import EXTENSION_KEY as STREAMS_KEY
from blueprints.realtime.stream import SseStreams
from extensions import socketio
from hub.events import EventSink
from integration.stream_takeover import StreamTakeover
from transport.loop import SharedLoop
from utils.descriptors import headroom, raise_soft_limit
from utils.metrics import FANOUT

__all__ = ["HubServices", "hub_services", "init_realtime"]


def init_realtime(app: Flask, events: EventSink | None = None) -> HubServices:
    """Build the hub for `app` on the backends REDIS_URL chooses, raising its lifecycle events to `events`; register
    the '/' namespace and the backends' readiness check. Background tasks (fan-out worker, Redis listener and
    monitor) start on first use."""
    start_task = app.extensions["background_tasks"].start
    services = build_services(app.config, socketio.server, start_task, events)
    app.extensions[EXTENSION_KEY] = services
    namespace = RealtimeNamespace("/", services, start_task)
    socketio.on_namespace(namespace)
    control = app.extensions["user_control"] = LocalUserControl(namespace, services, app.config["INSTANCE_ID"])
    listener = services.control.bind(control.apply, start_task, control.sweep)
    if listener is not None:  # with REDIS_URL: started by the first request or connection, stopped by the drain
        namespace.on_connected = listener.ensure_started
        app.before_request(listener.ensure_started)
    backends = services.backends
    FANOUT.bind(stats=backends.fanout.stats, refusals=services.hub.refusals)  # /metrics
    app.extensions["readiness"].add_check(backends.readiness_name, backends.readiness)
    if backends.on_request is not None:
        app.before_request(backends.on_request)
    init_streams(app, services)
    return services


def init_streams(app: Flask, services: HubServices) -> SseStreams:
    """SSE streams (GET /api/v1/stream) on the websockets' shared loop (or one of their own), drained at SIGTERM."""
    shared = app.extensions.get("websocket_transport")
    tasks = app.extensions["background_tasks"]
    loop = shared.loop if shared is not None else SharedLoop(tasks.start, "signalboard-sse")
    cap = app.config["MAX_WEBSOCKET_CLIENTS"]  # None with the threaded transport: what the descriptors leave
    if cap is None:
        limit = raise_soft_limit()
        cap = limit - headroom(limit)
    streams = app.extensions[STREAMS_KEY] = SseStreams(
        services, socketio.server.manager.taps, loop, socketio.start_background_task,
        app.config["WEBSOCKET_SEND_BUFFER"], cap)
    app.extensions["drain"].add_stop_callback("sse streams", streams.drain)
    app.extensions["user_control"].streams = streams  # revoke, disconnect, unsubscribe and list reach streams too
    app.wsgi_app = StreamTakeover(app.wsgi_app)  # type: ignore[method-assign]
    return streams
