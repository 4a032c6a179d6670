"""The operators' dashboard: login, the page at `/`, and its own Socket.IO namespace fed by one sampler task."""

from __future__ import annotations

import logging
import math
from functools import partial

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse  # what redirect() gives: a Flask Response is one too

from blueprints.dashboard.live import NAMESPACE, ConnectionTally, Sampler, Watchers
from blueprints.dashboard.namespace import DashboardNamespace
from blueprints.dashboard.security import (
    add_security_headers,
    csrf_token,
    csrf_valid,
    current_login,
    login_configured,
    login_revoked,
    origin_allowed,
    password_matches,
    revoke_login,
    session_login,
    start_login,
)
from blueprints.realtime.services import hub_services
from extensions import socketio
from hub import Hub
from hub.errors import Unavailable
from integration import socket_observers
from utils.credential_throttle import credential_failed, credential_wait, request_address
from utils.http_errors import json_error

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__)

EXTENSION_KEY = "dashboard"


def init_dashboard(app: Flask, hub: Hub) -> Sampler:
    """Register the blueprint, the '/dashboard' namespace and the sampler (started by the first dashboard)."""
    tally = ConnectionTally()
    tally.install(socket_observers(app))
    watchers = Watchers()
    # The realtime namespace knows each connection's `sub`; without its sub_of() the table shows none.
    sub_of = getattr(socketio.server.namespace_handlers.get("/"), "sub_of", None)
    services = hub_services(app)
    webhooks = app.extensions.get("webhooks")
    control = app.extensions.get("user_control")  # the realtime namespace's control actions, for the event list
    sampler = Sampler(socketio, hub, tally, watchers, sub_of, app.extensions["background_tasks"].start,
                      partial(login_revoked, services.revocations),
                      webhook_status=webhooks.status if webhooks is not None else list,
                      control_events=control.log.recent if control is not None else list,
                      streams=app.extensions.get("sse_streams"))
    app.extensions[EXTENSION_KEY] = {
        "sampler": sampler,
        "watchers": watchers,
        "initial_watch": [],  # channels the page opens watching (the demo's, in development)
    }
    socketio.on_namespace(DashboardNamespace(NAMESPACE, hub, sampler, watchers, services.tokens, services.users))
    app.register_blueprint(bp)
    app.after_request(add_security_headers)
    return sampler


def _login_page(status: int = 200, error: str | None = None, retry_after: int | None = None) -> Response:
    response = current_app.make_response(
        (render_template("login.html", error=error, csrf_token=csrf_token(), configured=login_configured()), status))
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@bp.get("/")
def index() -> BaseResponse:
    if current_login() is None:
        return redirect(url_for("dashboard.login"))
    initial_watch = current_app.extensions[EXTENSION_KEY]["initial_watch"]
    return current_app.make_response(render_template("dashboard.html", csrf_token=csrf_token(),
                                                     initial_watch=initial_watch))


@bp.get("/login")
def login() -> BaseResponse:
    if current_login() is not None:
        return redirect(url_for("dashboard.index"))
    return _login_page()


@bp.post("/login")
def login_submit() -> BaseResponse:
    if not origin_allowed(request):
        return json_error(403, "forbidden_origin", "This form may only be sent from the dashboard's own pages.")
    if not login_configured():
        return _login_page(403, "Dashboard login is disabled: set DASHBOARD_PASSWORD or API_KEYS.")
    if not csrf_valid(request.form.get("csrf_token")):
        return _login_page(400, "The form had expired. Please try again.")
    wait = credential_wait("dashboard login")
    if wait:
        seconds = max(1, math.ceil(wait))
        return _login_page(429, f"Too many failed attempts. Try again in {seconds} s.", retry_after=seconds)
    if not password_matches(request.form.get("password", "")):
        credential_failed("dashboard password")
        return _login_page(401, "Wrong password or API key.")
    start_login()
    log.info("dashboard login from %s", request_address())
    return redirect(url_for("dashboard.index"))


@bp.post("/logout")
def logout() -> BaseResponse:
    if not origin_allowed(request):
        return json_error(403, "forbidden_origin", "This form may only be sent from the dashboard's own pages.")
    if not csrf_valid(request.form.get("csrf_token")):
        return json_error(400, "csrf_failed", "The form had expired; reload the page and try again.")
    login_id = session_login()
    if login_id is not None:
        # The old cookie stays valid by its signature: the revocation makes every instance refuse it. Until it is
        # stored the login is not over, so the session is kept and the operator told to try again.
        try:
            revoke_login(login_id)
        except Unavailable:
            return json_error(503, "unavailable", "The logout could not be recorded (the store is unreachable); "
                                                  "try again shortly.", {"Retry-After": "1"})
    session.clear()
    if login_id is not None:
        # Socket sessions are copies taken at connect, so clearing the cookie does not reach them: end them here
        # (the sampler ends those on other instances within a second).
        for sid in current_app.extensions[EXTENSION_KEY]["watchers"].sids_of_login(login_id):
            socketio.server.disconnect(sid, namespace=NAMESPACE)
    return redirect(url_for("dashboard.login"))
