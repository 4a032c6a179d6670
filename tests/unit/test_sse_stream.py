"""transport/sse.py and integration/room_taps.py with real sockets and a real SharedLoop: frames, order, heartbeats,
the slow-consumer bound; and the stream's position parsing (Last-Event-ID, since)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from blueprints.realtime.stream import _positions, _since_params
from hub.errors import InvalidChannel, InvalidPayload
from integration.room_taps import RoomTaps
from transport.loop import SharedLoop
from transport.sse import SseConnection, sse_frame


def start_thread(name, target, stop):
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def loop():
    shared = SharedLoop(start_thread, "test-sse")
    shared.ensure_started()
    yield shared
    shared.stop()


@pytest.fixture
def pair():
    """A connected socket pair, both ends closed after the test (the loop may not have got to ours)."""
    ends = socket.socketpair()
    yield ends
    for end in ends:
        end.close()


def read_until(sock: socket.socket, wanted: bytes, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while wanted not in data:
        assert time.monotonic() < deadline, data
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_frames_written_before_the_socket_arrive_first_then_in_order(loop, pair):
    ours, theirs = pair
    closed = []
    conn = SseConnection(loop, 65536, closed.append)
    conn.write(sse_frame("a", {"n": 1}, "e;c=1"))
    conn.attach(ours)
    conn.write(sse_frame("b", [2], retry_ms=10))
    data = read_until(theirs, b"[2]\n\n")
    assert data == b'id: e;c=1\nevent: a\ndata: {"n":1}\n\nretry: 10\nevent: b\ndata: [2]\n\n'
    conn.close(sse_frame("bye", {}))
    assert read_until(theirs, b"bye").endswith(b"event: bye\ndata: {}\n\n")
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed and conn.closed and not conn.write(b"late")
    theirs.close()


def test_the_client_leaving_ends_the_stream_once(loop, pair):
    ours, theirs = pair
    closed = []
    conn = SseConnection(loop, 65536, closed.append)
    conn.attach(ours)
    theirs.close()
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == ["end of stream"]


def test_heartbeats_are_comments_sent_while_quiet(loop, pair):
    ours, theirs = pair
    conn = SseConnection(loop, 65536, lambda reason: None)
    conn.attach(ours)
    conn.heartbeat_every(0.05)
    assert read_until(theirs, b": heartbeat\n\n: heartbeat\n\n").startswith(b": heartbeat\n\n")
    conn.close()
    theirs.close()


def test_a_reader_that_stops_is_dropped_as_a_slow_consumer(loop, pair):
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    closed = []
    conn = SseConnection(loop, 65536, closed.append)
    conn.attach(ours)
    frame = sse_frame("big", "x" * 8000)
    written = 0
    while conn.write(frame) and written < 1000:  # nobody reads `theirs`
        written += 1
    assert written < 1000 and conn.slow_consumer
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == ["slow consumer"]
    theirs.close()


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, list]] = []

    def deliver(self, event, args) -> None:
        self.got.append((event, list(args)))


def test_room_taps_deliver_to_rooms_and_own_sid_minus_skipped():
    taps = RoomTaps()
    first, second = Recorder(), Recorder()
    taps.register("s1", first)
    taps.register("s2", second)
    assert taps.enter("s1", "channel a") and taps.enter("s2", "channel a")
    assert not taps.enter("gone", "channel a")
    taps.deliver("channel a", "ev", ({"d": 1}, {"offset": 1}), skip_sid="s2")
    taps.deliver("s2", "ev", ({"d": 2}, {"offset": 2}))  # a backlog to one stream's own room
    taps.deliver("channel b", "ev", 1)
    assert first.got == [("ev", [{"d": 1}, {"offset": 1}])]
    assert second.got == [("ev", [{"d": 2}, {"offset": 2}])]
    assert sorted(taps.members("channel a")) == ["s1", "s2"]
    taps.unregister("s1")
    assert taps.members("channel a") == ("s2",) and not taps.known("s1")


def test_last_event_id_and_since_parsing():
    assert _positions("abc123;orders.eu=4;public:x=0", "Last-Event-ID") == ("abc123", {"orders.eu": 4,
                                                                                      "public:x": 0})
    assert _since_params(["a.b:3,public:news:7", "c:0"]) == {"a.b": 3, "public:news": 7, "c": 0}
    for bad in ("", "has space;a=1", "e;a=", "e;a=-1", "e;a=1x", "e;a"):
        with pytest.raises(InvalidPayload):
            _positions(bad, "Last-Event-ID")
    with pytest.raises(InvalidChannel):
        _positions("e;bad name=1", "Last-Event-ID")
    for bad in (["a"], ["a:"], [":1"], ["a:b"]):
        with pytest.raises(InvalidPayload):
            _since_params(bad)
