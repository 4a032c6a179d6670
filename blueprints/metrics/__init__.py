"""`GET /metrics` in Prometheus text format, and the hooks that feed it from HTTP, Socket.IO and the runtime."""

from __future__ import annotations

import hmac

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from blueprints.metrics.instrument import instrument_socketio
from extensions import socketio
from integration import socket_observers
from utils.http_errors import json_error
from utils.metrics import HTTP_REQUESTS, RUNTIME
from utils.runtime_stats import connected_clients, sse_count, thread_counts

bp = Blueprint("metrics", __name__)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def figures_visible() -> bool:
    """Whether this request may see the runtime figures (/metrics, /readyz's detail): with METRICS_TOKEN set, only
    when it carries the token; without one, in development or when METRICS_PUBLIC=1 says they are public."""
    config = current_app.config
    if config["METRICS_TOKEN"]:
        return _bearer_matches(config["METRICS_TOKEN"])
    return config["METRICS_PUBLIC"] or config["SIGNALBOARD_ENV"] == "development"


@bp.get("/metrics")
def metrics() -> Response:
    if not figures_visible():
        if not current_app.config["METRICS_TOKEN"]:
            return json_error(403, "metrics_closed", "GET /metrics is closed in production: set METRICS_TOKEN (or "
                                                     "METRICS_PUBLIC=1 to serve it to anyone).")
        return json_error(401, "unauthorized", "GET /metrics needs 'Authorization: Bearer <METRICS_TOKEN>'.",
                          {"WWW-Authenticate": 'Bearer realm="metrics"'})
    # The format the scraper asks for (Accept), Prometheus text otherwise.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(REGISTRY), content_type=content_type)


def _bearer_matches(token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@bp.after_app_request
def count_request(response: Response) -> Response:
    """Every response a Flask route (or error handler) gives, labelled by endpoint name, never by raw path."""
    endpoint = request.url_rule.endpoint if request.url_rule is not None else "unmatched"
    method = request.method if request.method in _METHODS else "other"
    HTTP_REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
    return response


def init_metrics(app: Flask) -> None:
    """Point the scrape-time figures at this app and count its Socket.IO traffic; call after the extensions exist."""
    eio = socketio.server.eio
    readiness, admission = app.extensions["readiness"], app.extensions["admission"]
    RUNTIME.bind(clients=lambda: connected_clients(eio, sse_count(app.extensions)),
                 budget=lambda: admission.budget.report(eio), threads=thread_counts,
                 draining=lambda: readiness.draining)
    instrument_socketio(socket_observers(app))
