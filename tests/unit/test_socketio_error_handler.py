"""The four layers of utils/socketio_error_handler.py (SocketGuard now in utils/socket_guard.py), one by one."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest
from engineio.exceptions import SocketIsClosedError

from extensions import socketio
from utils.metrics import disconnect_race_counts
from utils.socket_guard import SocketGuard
from utils.socketio_error_handler import (
    DisconnectRaceLogFilter,
    install_thread_excepthook,
    is_disconnected_session_error,
    swallow_disconnected_session,
)


def races(kind: str) -> int:
    return disconnect_race_counts()[kind]


@pytest.mark.parametrize("exc, expected", [
    (KeyError("Session is disconnected"), True),
    (KeyError("Session not found"), True),
    (SocketIsClosedError(), True),
    (KeyError("user_id"), False),
    (ValueError("Session is disconnected"), False),
    (None, False),
])
def test_recognises_only_gone_session_errors(exc, expected):
    assert is_disconnected_session_error(exc) is expected


def test_decorator_swallows_races_and_passes_everything_else():
    @swallow_disconnected_session
    def gone():
        raise KeyError("Session is disconnected")

    @swallow_disconnected_session
    def broken():
        raise KeyError("user_id")

    before = races("decorator")
    assert gone() is None
    assert races("decorator") == before + 1
    with pytest.raises(KeyError, match="user_id"):
        broken()
    assert gone.__name__ == "gone"


def _event_client(app, handler_name, handler):
    socketio.on_event(handler_name, handler)
    return socketio.test_client(app)


def test_default_error_handler_acks_a_structured_error(app, caplog):
    def explode(data):
        raise RuntimeError("database password is hunter2")

    client = _event_client(app, "explode", explode)
    with caplog.at_level(logging.ERROR):
        ack = client.emit("explode", {}, callback=True)
    assert ack == {"ok": False,
                   "error": {"code": "internal_error", "message": "The server could not handle this event."}}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "event='explode'" in errors[0].getMessage()


def test_default_error_handler_swallows_gone_session(app, caplog):
    def touch_gone_session(data):
        raise KeyError("Session not found")

    client = _event_client(app, "touch", touch_gone_session)
    before = races("handler")
    with caplog.at_level(logging.DEBUG):
        ack = client.emit("touch", {}, callback=True)
    assert not ack  # nothing to ack for a gone client (the test client reports an empty ack as [])
    assert races("handler") == before + 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_default_error_handler_uses_domain_acks(app):
    class Forbidden(Exception):
        def to_ack(self):
            return {"ok": False, "error": {"code": "forbidden", "message": "not yours"}}

    def deny(data):
        raise Forbidden()

    ack = _event_client(app, "deny", deny).emit("deny", {}, callback=True)
    assert ack["error"]["code"] == "forbidden"


class FakeSocket:
    def __init__(self, closed=False):
        self.closed = closed


class FakeEngineIO:
    """Stands in for python-engineio's server: the guard only reads its `sockets` mapping."""

    def __init__(self, sockets):
        self.sockets = sockets


def _call(guard, query, method="POST"):
    environ = {"PATH_INFO": "/socket.io/", "QUERY_STRING": query, "REQUEST_METHOD": method,
               "wsgi.input": io.BytesIO(b"40")}
    captured = {}

    def start_response(status, headers):
        captured["status"], captured["headers"] = status, dict(headers)

    body = b"".join(guard(environ, start_response))
    return captured["status"], body


def test_guard_answers_unknown_and_closed_sessions_itself():
    def downstream(environ, start_response):
        raise AssertionError("must not be reached")

    guard = SocketGuard(downstream, FakeEngineIO({"closed": FakeSocket(closed=True)}))
    for sid, kind in (("nosuch", "unknown_session"), ("closed", "closed_session")):
        before = races(kind)
        status, body = _call(guard, f"EIO=4&transport=polling&sid={sid}")
        assert status.startswith("400")
        assert json.loads(body) == {"code": 1, "message": "Session ID unknown"}
        assert races(kind) == before + 1


def test_guard_turns_a_late_keyerror_into_400_and_lets_other_errors_through():
    def closes_meanwhile(environ, start_response):
        raise KeyError("Session is disconnected")

    guard = SocketGuard(closes_meanwhile, FakeEngineIO({"open": FakeSocket()}))
    before = races("request_race")
    assert _call(guard, "EIO=4&transport=polling&sid=open")[0].startswith("400")
    assert races("request_race") == before + 1

    def really_broken(environ, start_response):
        raise KeyError("something else")

    with pytest.raises(KeyError):
        _call(SocketGuard(really_broken, FakeEngineIO({"open": FakeSocket()})), "EIO=4&transport=polling&sid=open")


def test_log_filter_brings_library_races_to_debug():
    logger = logging.getLogger("engineio.server.test")
    logger.setLevel(logging.WARNING)
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))
    logger.addFilter(DisconnectRaceLogFilter())
    logger.propagate = False
    before_library, before_send = races("library"), races("send_to_closed")
    try:
        raise KeyError("Session is disconnected")
    except KeyError:
        logger.exception("post request handler error")
    logger.warning("Cannot send to sid %s", "abc")
    logger.warning("something real")
    assert stream.getvalue() == "something real\n"
    assert races("library") == before_library + 1 and races("send_to_closed") == before_send + 1


def test_thread_excepthook_logs_instead_of_printing(caplog):
    previous = threading.excepthook
    install_thread_excepthook()
    try:
        before = races("thread")
        with caplog.at_level(logging.DEBUG):
            for target in (lambda: (_ for _ in ()).throw(KeyError("Session not found")),
                           lambda: 1 / 0):
                thread = threading.Thread(target=target, name="worker-under-test")
                thread.start()
                thread.join()
        assert races("thread") == before + 1
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info[0] is ZeroDivisionError
    finally:
        threading.excepthook = previous
