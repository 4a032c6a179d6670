"""The Flask app factory: read it as the table of contents of Signalboard. Nothing runs at import."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from blueprints.cluster import init_cluster
from blueprints.metrics import init_metrics
from blueprints.realtime import hub_services, init_realtime
from blueprints.webhooks import init_webhooks
from config import default_sessions_per_address, load_config
from extensions import init_socketio, socketio
from integration import socket_observers
from integration.gunicorn_errors import register_body_read_errors
from utils.address_limits import AddressLimits
from utils.admission import Admission, ThreadBudget
from utils.connect_timeout import ConnectTimeout
from utils.cookie_sessions import CachedSigningSessions
from utils.credential_throttle import init_credential_throttle
from utils.descriptors import raise_soft_limit, websocket_cap
from utils.drain import BackgroundTasks, Drain
from utils.hosts import HostAllowList, LiteralPathMap
from utils.http_errors import register_http_error_handlers
from utils.logging_setup import configure_logging, register_secrets
from utils.malformed_input import install_malformed_input_guards
from utils.outbound import bind_outbound_tasks
from utils.readiness import Readiness
from utils.socket_guard import SocketGuard
from utils.socketio_error_handler import (
    install_disconnect_log_filters,
    install_thread_excepthook,
    register_socketio_error_handlers,
)

log = logging.getLogger(__name__)


class Signalboard(Flask):
    url_map_class = LiteralPathMap  # `//` in a path is a 404, never a redirect built from the Host header


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment; `config` overrides settings by their environment variable names."""
    settings = load_config(config)
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"], settings["SOCKETIO_LOG_LEVEL"])
    register_secrets([*settings["API_KEYS"], settings["SECRET_KEY"], settings["METRICS_TOKEN"],
                      settings["WEBHOOK_SECRET"], settings["DASHBOARD_PASSWORD"]])
    app = Signalboard(__name__)
    app.config.from_mapping(settings)
    configure_sessions(app)
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    if settings["GENERATED_SECRETS"]:
        log.warning("development: %s not set, so generated ones are used, kept in %s (never in production)",
                    ", ".join(settings["GENERATED_SECRETS"]), settings["DEV_SECRETS_PATH"])
    return app


def configure_sessions(app: Flask) -> None:
    app.session_interface = CachedSigningSessions()
    secure = app.config["SESSION_COOKIE_SECURE"]  # None: decided by SIGNALBOARD_ENV
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=app.config["SIGNALBOARD_ENV"] == "production" if secure is None else secure,
    )


def register_extensions(app: Flask) -> None:
    # Every background task starts through it, so the drain can stop each one (utils/drain.py, STOP_ORDER).
    tasks = app.extensions["background_tasks"] = BackgroundTasks(socketio.start_background_task)
    bind_outbound_tasks(tasks.start)  # the deadline watchdog of webhook and authorization-hook POSTs
    init_socketio(app)
    readiness = app.extensions["readiness"] = Readiness()
    # The shared websocket transport gives a websocket's thread back after the handshake: websockets get a cap of
    # their own instead of counting against the threads.
    # Its cap comes from the descriptor limit unless set (utils/descriptors.py: one websocket, one descriptor).
    shared = app.config["WEBSOCKET_TRANSPORT"] == "shared"
    if shared:
        app.config["MAX_WEBSOCKET_CLIENTS"] = websocket_cap(app.config["MAX_WEBSOCKET_CLIENTS"])
    else:
        raise_soft_limit()
    budget = ThreadBudget(app.config["GUNICORN_THREADS"], app.config["ADMISSION_RESERVE_THREADS"],
                          app.config["MAX_WEBSOCKET_CLIENTS"] if shared else None)
    if app.config["MAX_SESSIONS_PER_ADDRESS"] is None:  # half the capacity, now that the websocket cap is known
        app.config["MAX_SESSIONS_PER_ADDRESS"] = default_sessions_per_address(
            app.config, app.config["MAX_WEBSOCKET_CLIENTS"] or 0)
    limits = AddressLimits(app.config["MAX_SESSIONS_PER_ADDRESS"], app.config["CONNECT_RATE_PER_ADDRESS"],
                           app.config["CONNECT_BURST_PER_ADDRESS"])
    admission = app.extensions["admission"] = Admission(budget, socketio.server.eio, lambda: readiness.draining,
                                                        app.config["LONG_POLL_CAP_SECONDS"], tasks.start, limits,
                                                        app.config["TRUSTED_PROXIES"])
    readiness.add_check("capacity", admission.capacity_check)
    # The guard sits outside Flask-SocketIO's middleware: python-engineio raises gone-session errors before any
    # handler runs, so only a layer in front of it can answer them.
    app.wsgi_app = SocketGuard(app.wsgi_app, socketio.server.eio, admission)  # type: ignore[method-assign]
    if app.config["ALLOWED_HOSTS"]:  # outermost: a foreign Host reaches neither Flask nor Socket.IO
        app.wsgi_app = HostAllowList(app.wsgi_app, app.config["ALLOWED_HOSTS"])  # type: ignore[method-assign]
    init_credential_throttle(app)  # wrong API keys and dashboard passwords, counted per client address
    # SIGTERM runs it (gunicorn.conf.py); it stops the background tasks last.
    app.extensions["drain"] = Drain(
        socketio.server, readiness, tasks, graceful_timeout=app.config["GUNICORN_GRACEFUL_TIMEOUT"],
        batch_size=app.config["DRAIN_BATCH_SIZE"], notice=app.config["DRAIN_NOTICE_SECONDS"])
    register_edge_limits(app, admission)
    init_metrics(app)  # counts Socket.IO sessions and events; /metrics reads the runtime figures from this app
    # With WEBHOOK_URLS: lifecycle events batched, signed and POSTed by background deliverers; the hub raises them.
    webhooks = init_webhooks(app)
    # The hub on the backends REDIS_URL chose (memory, or Redis behind the cluster manager), the '/' namespace.
    init_realtime(app, events=webhooks.outbox if webhooks else None)
    init_cluster(app)  # the `flask publish` command (through Redis)


def register_edge_limits(app: Flask, admission: Admission) -> None:
    """What one address may hold: its sessions' slots (admission) and sessions that never join a namespace."""
    observers = socket_observers(app)
    observers.on_connect(admission.on_connect)
    observers.on_disconnect(admission.on_disconnect)
    if app.config["CONNECT_TIMEOUT_SECONDS"]:
        timeout = app.extensions["connect_timeout"] = ConnectTimeout(
            socketio.server, app.config["CONNECT_TIMEOUT_SECONDS"], app.extensions["background_tasks"].start)
        observers.on_connect(timeout.on_connect)
        observers.on_disconnect(timeout.on_disconnect)


def register_blueprints(app: Flask) -> None:
    from blueprints.api import bp as api
    from blueprints.api.reference import bp as api_reference
    from blueprints.dashboard import init_dashboard
    from blueprints.demo import init_demo
    from blueprints.health import bp as health
    from blueprints.metrics import bp as metrics
    from blueprints.realtime.stream import bp as stream

    app.register_blueprint(health)
    app.register_blueprint(metrics)
    app.register_blueprint(api)
    app.register_blueprint(stream)  # GET /api/v1/stream: SSE, authenticated by connection tokens, not API keys
    app.register_blueprint(api_reference)  # /api/v1/openapi.json and /api/v1/docs, outside the API key check
    init_dashboard(app, hub_services(app).hub)  # the page at /, its '/dashboard' namespace and sampler task
    init_demo(app)  # development: demo feeds and the dashboard's first watch; `flask demo` everywhere


def register_error_handlers(app: Flask) -> None:
    register_http_error_handlers(app)
    register_body_read_errors(app)  # a malformed chunked body is the client's 400, not a 500
    register_socketio_error_handlers(socketio)
    install_disconnect_log_filters()
    install_thread_excepthook()
    install_malformed_input_guards(app, socketio.server)  # hostile packets: protocol error, close, one line
