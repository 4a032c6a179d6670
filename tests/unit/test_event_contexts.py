"""integration/event_contexts.py: the request context of a Socket.IO event (the handshake's environ, under the Engine.IO
path) skips Flask's URL matching; every other request context is routed as before."""

from __future__ import annotations

from werkzeug.routing import MapAdapter
from werkzeug.test import EnvironBuilder


def counting_matches(monkeypatch) -> list[str]:
    matched: list[str] = []
    original = MapAdapter.match

    def match(self, path_info=None, *args, **kwargs):
        matched.append(path_info or self.path_info)
        return original(self, path_info, *args, **kwargs)

    monkeypatch.setattr(MapAdapter, "match", match)
    return matched


def test_a_socketio_event_context_is_not_matched_against_the_routes(app, monkeypatch):
    matched = counting_matches(monkeypatch)
    environ = EnvironBuilder("/socket.io/", query_string="EIO=4&transport=websocket").get_environ()
    with app.request_context(environ) as ctx:
        assert ctx.url_adapter is None and ctx.request.routing_exception is None
        assert ctx.request.url_rule is None  # as when the match failed (no route serves the Engine.IO path)
        assert ctx.request.path == "/socket.io/"
    assert matched == []  # before: matched against every route, and failed with NotFound, on every event


def test_other_requests_are_routed_as_before(app, client, monkeypatch):
    matched = counting_matches(monkeypatch)
    with app.test_request_context("/livez"):
        from flask import request, url_for

        assert request.url_rule is not None and request.url_rule.rule == "/livez"
        assert url_for("dashboard.login")
    assert client.get("/livez").status_code == 200
    assert client.get("/socket.io").status_code == 404  # outside the Engine.IO path: Flask's 404, routed
    assert len(matched) >= 3
