"""integration/session_environ.py: the environ kept for a shared-loop websocket session drops its handshake's server
objects and still builds a working request context."""

from __future__ import annotations

import io
import sys

from flask import Flask, request
from werkzeug.test import EnvironBuilder

from integration.session_environ import DROPPED_KEYS, EMPTY_INPUT, slim_environ


def handshake_environ() -> dict:
    environ = EnvironBuilder(path="/socket.io/", query_string="EIO=4&transport=websocket",
                             headers=[("Origin", "http://example.test"), ("X-Custom", "1")],
                             environ_base={"REMOTE_ADDR": "203.0.113.7"}).get_environ()
    environ |= {"gunicorn.socket": object(), "eventlet.input": object(), "wsgi.early_hints": lambda headers: None,
                "wsgi.input": io.BytesIO(b"unread"), "signalboard.reservation": "kept"}
    return environ


def test_drops_the_request_objects_in_place_and_keeps_the_rest():
    environ = handshake_environ()
    before = dict(environ)
    same = environ
    slim_environ(environ)
    assert environ is same  # python-socketio's own dict, changed where it is kept
    assert not set(DROPPED_KEYS) & environ.keys()
    assert environ["wsgi.input"] is EMPTY_INPUT and environ["wsgi.errors"] is sys.stderr
    kept = {k: v for k, v in before.items() if k not in DROPPED_KEYS + ("wsgi.input", "wsgi.errors")}
    assert {k: environ[k] for k in kept} == kept


def test_the_empty_input_reads_nothing():
    assert EMPTY_INPUT.read() == b"" and EMPTY_INPUT.read(10) == b"" and EMPTY_INPUT.readline() == b""
    assert EMPTY_INPUT.readlines() == [] and list(EMPTY_INPUT) == []


def test_a_request_context_from_the_slim_environ_sees_the_handshake():
    app = Flask(__name__)
    environ = handshake_environ()
    slim_environ(environ)
    with app.request_context(environ):
        assert request.args["transport"] == "websocket"
        assert request.headers["X-Custom"] == "1" and request.origin == "http://example.test"
        assert request.get_data() == b"" and request.form == {}
        assert request.remote_addr == "203.0.113.7"
