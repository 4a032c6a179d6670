"""The broadcast fast path: shared websockets get the frames appended directly, everyone else python-socketio's path."""

from __future__ import annotations

from typing import Any

import socketio
from engineio import packet as eio_packet

from integration.broadcast import BroadcastManager
from integration.manager import SerializedManager
from integration.redis_manager import ClusterQueueManager
from transport.frames import packet_frame


class FakeConn:
    def __init__(self, accepts: bool = True, pending: bool = False) -> None:
        self.frames: list[bytes] = []
        self.accepts, self.pending = accepts, pending

    def queue_frames(self, data: bytes) -> bool:
        if not self.accepts:
            return False
        self.frames.append(data)
        was_pending, self.pending = self.pending, True
        return not was_pending


class RecordingTap:
    def __init__(self) -> None:
        self.emits: list[tuple[str, list[Any]]] = []

    def deliver(self, event: str, args: list[Any]) -> None:
        self.emits.append((event, list(args)))


class FakeLoop:
    def __init__(self) -> None:
        self.flushes: list[list[Any]] = []

    def flush_all(self, connections: list[Any]) -> None:
        self.flushes.append(list(connections))


class FakeServer:
    packet_class = socketio.packet.Packet

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.eio = socketio.Server().eio  # python-socketio's manager takes its sids from eio.generate_id()

    def _send_eio_packet(self, eio_sid: str, pkt: Any) -> None:
        self.sent.append((eio_sid, pkt))


def manager_with(*eio_sids: str) -> tuple[SerializedManager, FakeServer, dict[str, str]]:
    manager = SerializedManager()
    server = FakeServer()
    manager.set_server(server)
    sids = {}
    for eio_sid in eio_sids:
        sids[eio_sid] = manager.connect(eio_sid, "/")
        manager.enter_room(sids[eio_sid], "/", "channel news")
    return manager, server, sids


def expected_frame(event: str, data: Any) -> bytes:
    encoded = socketio.packet.Packet(socketio.packet.EVENT, namespace="/", data=[event, *data]).encode()
    return packet_frame(eio_packet.Packet(eio_packet.MESSAGE, encoded))


def test_shared_websockets_get_the_frame_others_the_library_path_and_the_skipped_nothing():
    manager, server, sids = manager_with("ws-a", "ws-b", "ws-skipped", "polling")
    conns = {"ws-a": FakeConn(), "ws-b": FakeConn(pending=True), "ws-skipped": FakeConn()}
    loop = FakeLoop()
    manager.use_shared_transport(conns, loop)
    manager.emit("tick", ({"n": 1}, {"offset": 1}), "/", to="channel news", skip_sid=sids["ws-skipped"])
    frame = expected_frame("tick", [{"n": 1}, {"offset": 1}])
    assert conns["ws-a"].frames == [frame] and conns["ws-b"].frames == [frame]
    assert conns["ws-skipped"].frames == []
    assert [(eio_sid, pkt.encode()) for eio_sid, pkt in server.sent] == [
        ("polling", eio_packet.Packet(eio_packet.MESSAGE, socketio.packet.Packet(
            socketio.packet.EVENT, namespace="/", data=["tick", {"n": 1}, {"offset": 1}]).encode()).encode())]
    # One flush request for the whole broadcast, naming only the connection that had nothing pending.
    assert loop.flushes == [[conns["ws-a"]]]


def test_a_connection_that_drops_the_frames_is_not_sent_to_twice():
    manager, server, _ = manager_with("closing")
    loop = FakeLoop()
    manager.use_shared_transport({"closing": FakeConn(accepts=False)}, loop)
    manager.emit("tick", {"n": 1}, "/", to="channel news")
    assert server.sent == [] and loop.flushes == []


def test_without_the_shared_transport_and_with_a_callback_every_recipient_takes_the_library_path():
    manager, server, sids = manager_with("a", "b")
    manager.emit("tick", {"n": 1}, "/", to="channel news")
    assert sorted(eio_sid for eio_sid, _ in server.sent) == ["a", "b"]
    loop = FakeLoop()
    manager.use_shared_transport({"a": FakeConn(), "b": FakeConn()}, loop)
    server.sent.clear()
    server._send_packet = lambda eio_sid, pkt: server.sent.append((eio_sid, pkt))
    manager.emit("tick", {"n": 1}, "/", to=sids["a"], callback=lambda *args: None)
    assert [eio_sid for eio_sid, _ in server.sent] == ["a"] and loop.flushes == []


def test_both_managers_reach_the_fast_path_where_python_socketio_calls_manager_emit():
    # PubSubManager._handle_emit calls super().emit: with Redis that must land on the fast path, not Manager.emit.
    for manager_class in (SerializedManager, ClusterQueueManager):
        mro = manager_class.__mro__
        assert mro.index(BroadcastManager) == mro.index(socketio.Manager) - 1
        assert all(mro.index(BroadcastManager) > mro.index(base) for base in mro
                   if base.__module__.startswith("socketio.") and base is not socketio.Manager
                   and issubclass(base, socketio.Manager))


def test_emit_each_hands_a_shared_websocket_every_frame_in_one_write_and_the_others_each_packet_in_order():
    manager, server, sids = manager_with("ws-a", "polling")
    manager.enter_room(sids["ws-a"], "/", "owed")  # a recovering connection's room (its sid room in the app)
    manager.enter_room(sids["polling"], "/", "owed")
    conns = {"ws-a": FakeConn()}
    manager.use_shared_transport(conns, FakeLoop())
    stream = RecordingTap()  # an SSE stream in the room
    manager.taps.register("stream-1", stream)
    manager.taps.enter("stream-1", "owed")
    emits = [("tick", ({"n": 1}, {"offset": 1})), ("tock", ({"n": 2}, {"offset": 2}))]
    manager.emit_each(emits, "/", "owed")
    assert conns["ws-a"].frames == [expected_frame("tick", [{"n": 1}, {"offset": 1}])
                                    + expected_frame("tock", [{"n": 2}, {"offset": 2}])]
    assert [(eio_sid, pkt.data) for eio_sid, pkt in server.sent] == [
        ("polling", socketio.packet.Packet(socketio.packet.EVENT, namespace="/", data=[event, *data]).encode())
        for event, data in emits]
    assert stream.emits == [(event, list(data)) for event, data in emits]
