"""Fails loudly when a library the shared transport leans on changes version or moves an internal it relies on."""

from __future__ import annotations

import pytest
import socketio
from engineio.socket import Socket

from transport import TransportVersionError, install_transport, pins
from transport.send_bound import BoundedSendQueue, BoundedSocket


def test_installed_versions_are_the_pinned_ones():
    assert pins.version_mismatches() == [], "transport/ was written for other versions: re-check its internals"


def test_internals_the_transport_relies_on_are_unchanged():
    assert pins.internal_mismatches() == []


def test_pins_match_requirements_txt():
    from tests.conftest import ROOT

    pinned = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pinned[name.strip().lower()] = version.strip()
    for name, version in pins.PINNED_VERSIONS.items():
        if name in pinned:
            assert pinned[name] == version, name


def test_a_version_mismatch_stops_the_shared_transport(monkeypatch):
    monkeypatch.setitem(pins.PINNED_VERSIONS, "python-engineio", "0.0.1")
    with pytest.raises(TransportVersionError, match="python-engineio"):
        install_transport(object(), "shared", 1 << 20)


def test_threaded_keeps_engineio_but_bounds_every_socket():
    server = socketio.Server(async_mode="threading")
    assert install_transport(server, "threaded", 1 << 20) is None
    eio_socket = Socket(server.eio, "sid-1")
    server.eio.sockets["sid-1"] = eio_socket
    server.eio.handlers["connect"]("sid-1", {"QUERY_STRING": "EIO=4&transport=polling"})
    assert type(eio_socket) is BoundedSocket
    assert isinstance(eio_socket.queue, BoundedSendQueue) and eio_socket.queue.backlog.limit == 1 << 20
