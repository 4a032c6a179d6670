"""Liveness and readiness endpoints for process supervisors and load balancers."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from blueprints.metrics import figures_visible
from extensions import socketio
from utils.metrics import disconnect_race_counts
from utils.runtime_stats import connected_clients, sse_count, thread_counts, uptime_seconds

bp = Blueprint("health", __name__)


@bp.get("/livez")
def livez():
    """200 while the process answers HTTP at all; nothing else is checked, so a busy server is not restarted."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Status and reasons for anyone (what a load balancer needs); the figures behind them (sessions, free capacity,
    threads) only where /metrics may be read, so the public cannot size an attack from them."""
    failures = current_app.extensions["readiness"].failures()
    body = {"status": "not_ready" if failures else "ready", "reasons": failures}
    if figures_visible():
        body |= _figures()
    return jsonify(body), 503 if failures else 200


def _figures() -> dict:
    return {
        "clients": connected_clients(socketio.server.eio, sse_count(current_app.extensions)),
        "budget": current_app.extensions["admission"].budget.report(socketio.server.eio),
        "threads": thread_counts(),
        "disconnect_races": disconnect_race_counts(),
        "uptime_seconds": uptime_seconds(),
    }
