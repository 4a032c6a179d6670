"""integration/pins.py: the pinned versions and internals, checked at start-up in every mode, fail in one line."""

from __future__ import annotations

import threading

import pytest
import socketio
from engineio.socket import Socket

from app import create_app
from integration import LibraryVersionError, SocketObservers, pins
from integration.bounded_sockets import BoundedSendQueue, BoundedSocket
from integration.lifecycle import install_lifecycle
from integration.websocket_transport import build_transport
from tests.conftest import UNIT_CONFIG


def test_installed_versions_are_the_pinned_ones():
    assert pins.version_mismatches() == [], "integration/ was written for other versions: re-check its hooks"


def test_internals_the_hooks_rely_on_are_unchanged():
    assert pins.internal_mismatches() == []


def test_pins_match_requirements_txt():
    from tests.conftest import ROOT

    pinned = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pinned[name.strip().lower()] = version.strip()
    for name, version in pins.PINNED_VERSIONS.items():
        if name in pinned:  # wsproto comes with simple-websocket (its pin in requirements.txt: issue 13, services)
            assert pinned[name] == version, name


MODES = {
    "shared": {"WEBSOCKET_TRANSPORT": "shared"},
    "threaded": {"WEBSOCKET_TRANSPORT": "threaded"},
    "redis": {"REDIS_URL": "redis://127.0.0.1:1/0"},  # never connected: start-up stops before
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_version_mismatch_stops_start_up_in_one_line(monkeypatch, mode):
    monkeypatch.setitem(pins.PINNED_VERSIONS, "python-engineio", "0.0.1")
    with pytest.raises(LibraryVersionError) as raised:
        create_app({**UNIT_CONFIG, **MODES[mode]})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("python-engineio 4.15.1 is installed, integration/ expects 0.0.1")
    assert "README: Upgrading a pinned library" in message


def test_start_sh_check_prints_one_line_and_fails(monkeypatch, capsys):
    assert pins.main() == 0
    monkeypatch.setitem(pins.PINNED_VERSIONS, "gunicorn", "99.0")
    assert pins.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("signalboard: gunicorn 27.0.1 is installed, integration/ expects 99.0")


def test_start_sh_runs_the_check_before_gunicorn():
    from tests.conftest import ROOT

    script = (ROOT / "start.sh").read_text()
    assert script.index("python -m integration\n") < script.index("exec gunicorn")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_moved_internal_stops_start_up(monkeypatch, mode):
    monkeypatch.setattr(pins, "internal_mismatches", lambda: ["engineio Socket.send puts packets on self.queue"])
    with pytest.raises(LibraryVersionError, match=r"^a library internal changed: engineio Socket\.send"):
        create_app({**UNIT_CONFIG, **MODES[mode]})


def test_threaded_keeps_engineio_but_bounds_every_socket():
    server = socketio.Server(async_mode="threading")
    observers = SocketObservers()
    install_lifecycle(server, observers)
    transport, adopter = build_transport(server.eio, "threaded", 1 << 20, lambda name, target, stop: None)
    assert transport is None
    observers.set_adopter(adopter)
    eio_socket = Socket(server.eio, "sid-1")
    created = eio_socket.queue
    server.eio.sockets["sid-1"] = eio_socket
    server.eio.handlers["connect"]("sid-1", {"QUERY_STRING": "EIO=4&transport=polling"})
    assert type(eio_socket) is BoundedSocket
    assert isinstance(eio_socket.queue, BoundedSendQueue) and eio_socket.queue.backlog.limit == 1 << 20
    assert eio_socket.queue is created  # made bounded-capable by create_queue: one queue per socket, not two


def test_shared_sockets_get_one_sink_queue_from_the_start():
    from integration.shared_sockets import SinkQueue

    server = socketio.Server(async_mode="threading")
    observers = SocketObservers()
    install_lifecycle(server, observers)
    threads: list[threading.Thread] = []

    def start_task(name, target, stop):
        threads.append(threading.Thread(target=target, daemon=True))
        threads[-1].start()

    transport, adopter = build_transport(server.eio, "shared", 1 << 20, start_task)
    observers.set_adopter(adopter)
    eio_socket = Socket(server.eio, "sid-1")
    created = eio_socket.queue
    assert type(created) is SinkQueue
    server.eio.sockets["sid-1"] = eio_socket
    try:
        server.eio.handlers["connect"]("sid-1", {"QUERY_STRING": "EIO=4&transport=polling"})
        assert eio_socket.queue is created and created.backlog.limit == 1 << 20
    finally:
        transport.loop.stop()  # the adoption started the loop; it closes its wake-up pair as it ends
        for thread in threads:
            thread.join(5)
