"""integration/observers.py and lifecycle.py: call order, what observers see, and the exception policy."""

from __future__ import annotations

import logging

import pytest
import socketio
from engineio.socket import Socket
from prometheus_client import REGISTRY

from integration import SocketObservers
from integration.lifecycle import install_lifecycle, uninstall_lifecycle


def errors(point: str) -> float:
    return REGISTRY.get_sample_value("signalboard_observer_errors_total", {"point": point}) or 0.0


@pytest.fixture
def server():
    server = socketio.Server(async_mode="threading")
    observers = SocketObservers()
    install_lifecycle(server, observers)
    server.observers = observers
    return server


def test_each_slot_holds_one_dispatcher_and_uninstall_gives_python_socketio_its_own_back(server):
    assert server.eio.handlers["connect"] != server._handle_eio_connect
    with pytest.raises(RuntimeError, match="already installed"):
        install_lifecycle(server, SocketObservers())
    uninstall_lifecycle(server)
    assert server.eio.handlers["connect"] == server._handle_eio_connect
    assert server.eio.handlers["message"] == server._handle_eio_message
    assert server.eio.handlers["disconnect"] == server._handle_eio_disconnect
    assert "emit" not in vars(server)


def test_a_second_layer_on_a_rewrapped_slot_is_refused():
    server = socketio.Server(async_mode="threading")
    server.eio.on("message", lambda sid, data: None)
    with pytest.raises(RuntimeError, match="python-socketio's own handlers"):
        install_lifecycle(server, SocketObservers())


def test_adopter_runs_before_python_socketio_and_observers_after_acceptance(server):
    calls = []
    server.observers.set_adopter(lambda eio_socket: calls.append(("adopt", type(eio_socket) is Socket)))
    server.observers.on_connect(lambda sid, environ: calls.append(("first", sid)))
    server.observers.on_connect(lambda sid, environ: calls.append(("second", sid)))
    server.eio.sockets["sid-1"] = Socket(server.eio, "sid-1")
    assert server.eio._trigger_event("connect", "sid-1", {"QUERY_STRING": "EIO=4&transport=polling"}) is None
    assert calls == [("adopt", True), ("first", "sid-1"), ("second", "sid-1")]
    with pytest.raises(RuntimeError, match="already installed"):
        server.observers.set_adopter(lambda eio_socket: None)


def test_an_adopter_that_raises_refuses_the_connection_and_observers_do_not_see_it(server, caplog):
    seen = []
    server.observers.on_connect(lambda sid, environ: seen.append(sid))

    def broken(eio_socket):
        raise RuntimeError("adopter bug")

    server.observers.set_adopter(broken)
    server.eio.sockets["sid-2"] = Socket(server.eio, "sid-2")
    with caplog.at_level(logging.ERROR):
        # python-engineio's own policy for a connect handler that raises: logged, connection refused.
        assert server.eio._trigger_event("connect", "sid-2", {"QUERY_STRING": "EIO=4&transport=polling"}) is False
    assert seen == []
    assert any(r.getMessage() == "connect handler error" for r in caplog.records)


def test_an_observer_that_raises_is_counted_and_logged_and_the_rest_still_run(server, caplog):
    seen = []

    def broken(event, namespace, to):
        raise ValueError("observer bug")

    server.observers.on_emit(broken)
    server.observers.on_emit(lambda event, namespace, to: seen.append((event, namespace, to)))
    before = errors("emit")
    with caplog.at_level(logging.ERROR, logger="integration.observers"):
        server.emit("tick", {"n": 1}, to="nobody-here", namespace="/")
    assert seen == [("tick", "/", "nobody-here")]
    assert errors("emit") == before + 1
    [record] = [r for r in caplog.records if r.name == "integration.observers"]
    assert "emit observer" in record.getMessage() and record.exc_info[0] is ValueError


def test_disconnect_observers_see_the_reason_before_python_socketio(server):
    seen = []
    server.observers.on_disconnect(lambda sid, reason: seen.append((sid, reason)))
    server.eio._trigger_event("disconnect", "sid-gone", server.eio.reason.PING_TIMEOUT)
    assert seen == [("sid-gone", server.eio.reason.PING_TIMEOUT)]


def test_the_guard_decides_and_observers_see_only_what_it_lets_through(server):
    seen = []
    server.observers.on_message(lambda sid, data: seen.append(data))
    server.observers.set_message_guard(lambda sid, data, deliver: deliver() if data != "bad" else "refused")
    assert server.eio.handlers["message"]("sid-1", "bad") == "refused"
    server.eio.handlers["message"]("sid-1", "2[\"ok\"]")
    assert seen == ["2[\"ok\"]"]


def test_registering_the_same_observer_twice_counts_once(server):
    seen = []

    def observer(sid, reason):
        seen.append(sid)

    server.observers.on_disconnect(observer)
    server.observers.on_disconnect(observer)
    server.eio._trigger_event("disconnect", "sid-3", "client disconnect")
    assert seen == ["sid-3"]


def races(kind: str) -> float:
    return REGISTRY.get_sample_value("signalboard_disconnect_races_total", {"kind": kind}) or 0.0


def test_a_connect_that_lost_the_race_with_its_disconnect_is_swallowed_and_leaves_no_member(server):
    """python-socketio's CONNECT handling registers the member, then reads the environ the session's disconnect
    (another thread, first) already deleted: KeyError(eio_sid), which used to be logged at ERROR with a trace."""
    server.on("connect", lambda sid, environ, auth: True)
    server.eio.handlers["connect"]("eio-1", {"QUERY_STRING": "EIO=4&transport=polling"})
    server.eio.handlers["disconnect"]("eio-1", "transport close")  # runs first, on the other thread
    before = races("connect_race")
    assert server.eio.handlers["message"]("eio-1", "0") is None  # the CONNECT packet, too late
    assert races("connect_race") == before + 1
    assert server.manager.sid_from_eio_sid("eio-1", "/") is None
    assert not server.manager.pending_connect.get("/")


def test_other_key_errors_in_a_connect_still_raise(server):
    def refuse(sid, environ, auth):
        raise KeyError("eio-2")  # the same text, but the session is still there: a bug, not the race

    server.on("connect", refuse)
    server.eio.handlers["connect"]("eio-2", {"QUERY_STRING": "EIO=4&transport=polling"})
    with pytest.raises(KeyError):
        server.eio.handlers["message"]("eio-2", "0")
