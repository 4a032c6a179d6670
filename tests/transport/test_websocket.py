"""WebSocketConnection over a real socket pair: frames out, messages in, control frames, close handshakes, and
the bounded send buffer. The peer is a wsproto client, so every byte is checked by an independent parser."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from transport import send_bound
from transport.frames import encode_frame
from transport.loop import SharedLoop
from transport.websocket import WebSocketConnection


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.closed = threading.Event()
        self.close_calls = 0
        self.closed_on: list[int] = []  # the threads on_close ran on
        self.got_message = threading.Event()

    def on_message(self, data):
        self.messages.append(data)
        self.got_message.set()

    def on_close(self):
        self.close_calls += 1
        self.closed_on.append(threading.get_ident())
        self.closed.set()


class Peer:
    """The client end: a blocking socket and a wsproto client connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(5)
        self.ws = Connection(ConnectionType.CLIENT)

    def send(self, event) -> None:
        self.sock.sendall(self.ws.send(event))

    def events(self, count: int = 1) -> list:
        got: list = []
        while len(got) < count:
            got.extend(self.ws.events())
            if len(got) >= count:
                break
            data = self.sock.recv(65536)
            if not data:
                got.append("eof")
                break
            self.ws.receive_data(data)
        return got


@pytest.fixture
def pair(loop: SharedLoop) -> Iterator[tuple[WebSocketConnection, Peer, Recorder]]:
    server_sock, client_sock = socket.socketpair()
    server_sock.setblocking(False)
    recorder = Recorder()
    conn = WebSocketConnection(loop, server_sock, recorder, max_message=1000, max_buffered=256 * 1024)
    loop.call_soon(conn.start)
    yield conn, Peer(client_sock), recorder
    client_sock.close()
    recorder.closed.wait(5)
    server_sock.close()


def test_frames_written_from_any_thread_arrive_in_order(pair):
    conn, peer, _ = pair
    writers = [threading.Thread(target=lambda: conn.write(encode_frame(b"x" * 10))) for _ in range(20)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    conn.write(encode_frame(b"last"))
    events = peer.events(21)
    assert [e.data for e in events] == ["x" * 10] * 20 + ["last"]


def test_messages_arrive_whole_even_when_fragmented(pair):
    _, peer, recorder = pair
    peer.send(TextMessage(data="hel", message_finished=False))
    peer.send(TextMessage(data="lo", message_finished=True))
    assert recorder.got_message.wait(5)
    assert recorder.messages == ["hello"]


def test_a_ping_gets_its_pong(pair):
    _, peer, _ = pair
    peer.send(Ping(payload=b"abc"))
    [event] = peer.events()
    assert isinstance(event, Pong) and event.payload == b"abc"


def test_client_close_is_answered_and_reported_once(pair):
    conn, peer, recorder = pair
    peer.send(CloseConnection(code=1000))
    [event] = peer.events()
    assert isinstance(event, CloseConnection) and event.code == 1000
    assert recorder.closed.wait(5) and recorder.close_calls == 1
    assert conn.closed and conn.write(encode_frame(b"late")) is False


def test_server_close_flushes_then_closes_after_the_answer(pair):
    conn, peer, recorder = pair
    conn.write(encode_frame(b"bye"))
    conn.close()
    assert conn.write(encode_frame(b"after close")) is False
    message, close = peer.events(2)
    assert message.data == "bye" and isinstance(close, CloseConnection)
    assert not recorder.closed.is_set()  # waits for the client's answer
    peer.send(close.response())
    assert recorder.closed.wait(5) and recorder.close_calls == 1


def test_reset_peer_is_reported(pair):
    _, peer, recorder = pair
    peer.sock.close()
    assert recorder.closed.wait(5) and recorder.close_calls == 1


def test_too_big_a_message_closes_with_1009(pair):
    _, peer, recorder = pair
    peer.send(TextMessage(data="y" * 1001))
    [event] = peer.events()
    assert isinstance(event, CloseConnection) and event.code == 1009
    assert recorder.messages == []


def test_a_client_that_stops_reading_is_dropped_not_buffered_forever(pair):
    conn, peer, recorder = pair
    frame = encode_frame(b"z" * 60000)
    accepted = 0
    for _ in range(1000):  # ~60 MB offered; the kernel buffers a little, our bound is 256 KiB, the hard limit 1 MiB
        if not conn.write(frame):
            break
        accepted += 1
    assert accepted < 1000
    assert recorder.closed.wait(5) and conn.closed and conn.slow_consumer


def test_a_burst_over_the_bound_passes_when_the_client_catches_up(pair):
    conn, peer, recorder = pair
    frame = encode_frame(b"b" * 60000)
    # 720 KB at once: past the 256 KiB bound even after the socket pair's kernel buffers, under the 1 MiB hard limit.
    assert all(conn.write(frame) for _ in range(12))
    received = b""
    while received.count(b"b") < 12 * 60000:
        received += peer.sock.recv(1 << 20)
    assert not conn.closed and not conn.slow_consumer
    assert conn.write(frame)


def test_a_client_that_stays_over_the_bound_is_dropped(pair, monkeypatch):
    monkeypatch.setattr(send_bound, "SLOW_CONSUMER_GRACE", 0.2)
    conn, peer, recorder = pair
    frame = encode_frame(b"s" * 60000)
    assert all(conn.write(frame) for _ in range(12))  # over the bound, under the hard limit; the peer never reads
    time.sleep(0.3)
    assert not conn.write(frame)
    assert recorder.closed.wait(5) and conn.slow_consumer


def test_every_frame_of_many_broadcasts_reaches_every_connection(loop: SharedLoop):
    import selectors
    import time

    pairs = [socket.socketpair() for _ in range(30)]
    conns = []
    for server_sock, _ in pairs:
        server_sock.setblocking(False)
        conn = WebSocketConnection(loop, server_sock, Recorder(), max_message=1000, max_buffered=1 << 20)
        loop.call_soon(conn.start)
        conns.append(conn)
    frame = encode_frame(b"m" * 98)
    received = [0] * len(pairs)
    sel = selectors.DefaultSelector()
    for index, (_, client_sock) in enumerate(pairs):
        client_sock.setblocking(False)
        sel.register(client_sock, selectors.EVENT_READ, index)
    try:
        for round_ in range(200):  # like a fan-out worker: one frame to everyone, pause, again
            for conn in conns:
                assert conn.write(frame)
            if round_ % 20 == 0:
                time.sleep(0.002)
        deadline = time.monotonic() + 10
        while min(received) < 200 * len(frame) and time.monotonic() < deadline:
            for key, _ in sel.select(0.05):
                assert isinstance(key.fileobj, socket.socket)
                received[key.data] += len(key.fileobj.recv(65536))
        assert received == [200 * len(frame)] * len(pairs)
    finally:
        sel.close()
        for conn in conns:
            conn.close()
        for _, client_sock in pairs:
            client_sock.close()
        time.sleep(0.1)
        for server_sock, _ in pairs:
            server_sock.close()


def test_a_finished_connection_ends_with_fin_not_reset(loop: SharedLoop):
    """Bytes a client sends after the close (a frame queued behind its close frame) must not make the server's
    kernel answer with a TCP reset, which a proxy in front would log as an error."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server_sock, _ = listener.accept()
    server_sock.setblocking(False)
    recorder = Recorder()
    conn = WebSocketConnection(loop, server_sock, recorder, max_message=1000, max_buffered=1 << 20)
    loop.call_soon(conn.start)
    peer = Peer(client)
    with client:
        peer.send(CloseConnection(code=1000))
        assert recorder.closed.wait(5)
        time.sleep(0.1)
        client.sendall(b"late bytes")
        time.sleep(0.2)
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # ECONNRESET once a reset arrived
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    peer.ws.receive_data(received)
    assert any(isinstance(event, CloseConnection) for event in peer.ws.events())  # the answer, then our FIN


# ---- write-through: a connection with nothing buffered is sent to at once, from the writing thread -----------------

def frames_of(data: bytes) -> list:
    """The events an independent wsproto client parses out of `data`."""
    ws = Connection(ConnectionType.CLIENT)
    ws.receive_data(data)
    return list(ws.events())


def read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(5)
    data = b""
    while len(data) < size:
        chunk = sock.recv(1 << 20)
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


def whole_messages(peer: Peer, count: int) -> list[tuple[str, object]]:
    """The next `count` messages and pongs, text fragments joined (a big one arrives in pieces): a long message
    as its length."""
    got: list[tuple[str, object]] = []
    text = ""
    while len(got) < count:
        for event in peer.events():
            if isinstance(event, Pong):
                got.append(("pong", event.payload))
            elif isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    got.append(("text", text if len(text) < 100 else len(text)))
                    text = ""
            else:
                raise AssertionError(f"unexpected {event!r}")
    return got


def test_a_frame_is_sent_at_once_from_the_writing_thread_when_nothing_is_buffered():
    # The loop is never started: whatever arrives was sent by this thread, not by a loop flush.
    idle_loop = SharedLoop(lambda name, target, stop: None, name="never-started")
    server_sock, client_sock = socket.socketpair()
    with server_sock, client_sock:
        server_sock.setblocking(False)
        conn = WebSocketConnection(idle_loop, server_sock, Recorder(), max_message=1000, max_buffered=1 << 20)
        frame = encode_frame(b"now")
        assert conn.queue_frames(frame) is False  # sent: no flush for the caller to ask for
        assert conn.write(encode_frame(b"again")) is True
        assert idle_loop._flushes == []
        data = read_exactly(client_sock, len(frame) + len(encode_frame(b"again")))
        assert [event.data for event in frames_of(data)] == ["now", "again"]


def test_what_the_kernel_does_not_take_is_buffered_and_flushed_in_order_behind_it(loop: SharedLoop):
    server_sock, client_sock = socket.socketpair()
    with server_sock, client_sock:
        server_sock.setblocking(False)
        recorder = Recorder()
        conn = WebSocketConnection(loop, server_sock, recorder, max_message=1000, max_buffered=16 << 20)
        loop.call_soon(conn.start)
        big = encode_frame(b"B" * (4 << 20))  # far more than a socket pair's kernel buffers take at once
        assert conn.queue_frames(big) is True  # part sent, the rest buffered: the caller must ask for a flush
        after = encode_frame(b"after")
        assert conn.queue_frames(after) is False  # behind the buffered rest, not written through past it
        loop.flush_all([conn])
        assert conn.write(encode_frame(b"last")) is True
        peer = Peer(client_sock)
        peer.send(Ping(payload=b"p"))  # the loop's own pong joins the buffer behind what waits there
        assert whole_messages(peer, 4) == [("text", 4 << 20), ("text", "after"), ("text", "last"), ("pong", b"p")]
        assert not conn.closed and not recorder.closed.is_set()
        # Drained: the next frame is written through again.
        deadline = time.monotonic() + 5
        while conn._out and time.monotonic() < deadline:
            time.sleep(0.01)
        assert conn.queue_frames(encode_frame(b"direct")) is False
        assert [event.data for event in peer.events()] == ["direct"]
        conn.close()


def test_a_failed_write_through_ends_the_connection_on_the_loop_thread_without_raising(loop: SharedLoop):
    server_sock, client_sock = socket.socketpair()
    with server_sock:
        server_sock.setblocking(False)
        recorder = Recorder()
        # Not started, so the loop cannot notice the peer's close by reading first: the send finds it.
        conn = WebSocketConnection(loop, server_sock, recorder, max_message=1000, max_buffered=1 << 20)
        client_sock.close()
        assert conn.queue_frames(encode_frame(b"into the void")) is None  # EPIPE: dropped, not raised
        assert conn.write(encode_frame(b"later")) is False
        assert recorder.closed.wait(5) and conn.closed
        assert recorder.closed_on == [loop.thread_ident]
        assert not conn.slow_consumer


def test_the_bound_still_drops_a_slow_consumer_of_written_through_broadcasts(loop: SharedLoop):
    server_sock, client_sock = socket.socketpair()
    with server_sock, client_sock:
        server_sock.setblocking(False)
        recorder = Recorder()
        conn = WebSocketConnection(loop, server_sock, recorder, max_message=1000, max_buffered=256 * 1024)
        loop.call_soon(conn.start)
        frame = encode_frame(b"w" * 60000)
        results = []
        for _ in range(1000):  # like a fan-out: frames, and a flush asked for when one is needed; nobody reads
            result = conn.queue_frames(frame)
            results.append(result)
            if result is None:
                break
            if result:
                loop.flush_all([conn])
        assert results[0] is False  # the first went straight into the kernel buffer
        assert True in results and results[-1] is None  # then the rest was buffered, until the bound dropped it
        assert recorder.closed.wait(5) and conn.closed and conn.slow_consumer


def test_a_finished_connection_lets_go_of_its_handler(pair):
    """The handler (the Engine.IO session) usually refers back to its connection: once on_close has run the
    connection drops it, so the pair is freed by refcounting, not left as a cycle for a full collection."""
    from transport.websocket import FINISHED

    conn, peer, recorder = pair
    peer.send(CloseConnection(code=1000))
    assert recorder.closed.wait(5) and recorder.close_calls == 1
    deadline = time.time() + 5
    while conn._handler is not FINISHED and time.time() < deadline:  # set right after on_close, on the loop thread
        time.sleep(0.01)
    assert conn._handler is FINISHED
    FINISHED.on_message("late")  # a handler that takes anything and does nothing
    FINISHED.on_close()
