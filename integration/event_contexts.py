"""A Socket.IO event's Flask request context skips URL routing: Flask matched the Socket.IO path on every event.

Flask-SocketIO runs every Socket.IO event (the namespace connect, each `subscribe`, ...) inside
`app.request_context(<the session's handshake environ>)`, and Flask's `RequestContext` builds a URL adapter for it
(`app.create_url_adapter`: the host, the URL map bound to the environ) and, on push, matches `/socket.io/` against
every route, which fails with a NotFound kept as the context's `routing_exception`. In a connect storm that was about
a tenth of the server's CPU (docs/perf.md, connect path). No request under the Engine.IO path ever reaches a Flask
view (python-engineio's middleware takes them all), so for those `create_url_adapter` answers None, as Flask does
outside a request: `request.url_rule` stays None as before, and `url_for` cannot be used in Socket.IO handlers
(none does; it would need `SERVER_NAME`).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

DEFAULT_ENGINEIO_PATH = "/socket.io/"


def unrouted_event_contexts(app: Flask) -> None:
    """Replaces Flask's `create_url_adapter` on `app` for requests under the Engine.IO path (call right after
    `socketio.init_app`, while `app.wsgi_app` is Flask-SocketIO's middleware, which knows that path)."""
    path = getattr(app.wsgi_app, "engineio_path", DEFAULT_ENGINEIO_PATH)
    create = app.create_url_adapter

    def create_url_adapter(request: Any) -> Any:
        if request is not None and request.environ.get("PATH_INFO", "").startswith(path):
            return None  # a Socket.IO event's context: nothing to route
        return create(request)

    app.create_url_adapter = create_url_adapter  # type: ignore[method-assign]
