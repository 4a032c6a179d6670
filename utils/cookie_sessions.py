"""Flask's signed-cookie sessions, with the signing serializer built once per key set instead of on every request.

Flask's `SecureCookieSessionInterface.get_signing_serializer` makes a new itsdangerous `URLSafeTimedSerializer`
each time a request context opens its session: on every HTTP request, and on every Socket.IO event (Flask-SocketIO
pushes a request context per event); itsdangerous's constructor even serializes a probe value to learn whether the
serializer speaks text. That was about 70 us of the 113 us an event's context costs (cProfile, in process), two
events per client connect. A built serializer holds no per-request state, so one serves every thread until the
secret key (or its fallbacks) change. A request without a Cookie header opens its empty session without parsing
the headers for one.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer


class CachedSigningSessions(SecureCookieSessionInterface):
    """Flask's cookie sessions, one signing serializer per (secret key, fallbacks)."""

    def __init__(self) -> None:
        self._cached: tuple[tuple[Any, ...], URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config["SECRET_KEY_FALLBACKS"] or ()))
        cached = self._cached  # one read: another thread may replace it (a tuple, swapped whole)
        if cached is None or cached[0] != keys:
            cached = self._cached = (keys, super().get_signing_serializer(app))
        return cached[1]

    def open_session(self, app: Flask, request: Any) -> Any:
        # Without a Cookie header there is nothing to read: the empty session Flask's own code gives, without
        # werkzeug's `request.cookies`, which walks every environ key to find the header (Flask-SocketIO opens a
        # session for every Socket.IO event: about 6 % of a connect storm's CPU, docs/perf.md).
        if "HTTP_COOKIE" not in request.environ:
            return None if self.get_signing_serializer(app) is None else self.session_class()
        return super().open_session(app, request)
