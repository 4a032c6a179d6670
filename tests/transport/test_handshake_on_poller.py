"""A direct websocket Engine.IO handshake is answered on gunicorn's poller thread (integration/request_reader.py),
not in the gthread pool: with every pool thread busy, a client still connects, joins the namespace and subscribes."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections import deque
from types import SimpleNamespace

import pytest
import requests

from integration.request_reader import HANDSHAKES_PER_TURN, RequestReadingWorker, is_direct_websocket_handshake
from tests.eio import RawWebSocket
from tests.transport.test_shared_server import subscribed_websocket

THREADS = 4
HOLD_SECONDS = 6.0


def head(text: str) -> tuple[bytearray, int]:
    buffer = bytearray(text.replace("\n", "\r\n").encode() + b"\r\n")
    return buffer, buffer.find(b"\r\n\r\n")


@pytest.mark.parametrize(("request_head", "direct"), [
    ("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\n", True),
    ("GET /socket.io/?transport=websocket&EIO=4 HTTP/1.1\nupgrade: WebSocket\n", True),
    ("GET /socket.io/?EIO=4&transport=websocket&sid=abc HTTP/1.1\nUpgrade: websocket\n", False),  # an upgrade
    ("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\nUpgrade: websocket\n", False),
    ("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\nHost: x\n", False),  # no Upgrade header
    ("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\nUpgrade: websocket\nContent-Length: 5\n", False),
    ("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\nUpgrade: websocket\nTransfer-Encoding: chunked\n", False),
    ("POST /socket.io/?EIO=4&transport=websocket HTTP/1.1\nUpgrade: websocket\n", False),
    ("GET /api/v1/stream?transport=websocket HTTP/1.1\nUpgrade: websocket\n", False),
])
def test_which_requests_are_answered_on_the_poller(request_head, direct):
    assert is_direct_websocket_handshake(*head(request_head)) is direct


def test_waiting_handshakes_are_served_a_few_per_turn_after_the_other_connections_events():
    worker = object.__new__(RequestReadingWorker)  # only the poller's turn is exercised here
    worker.poller = selectors.DefaultSelector()
    order: list[str] = []
    worker._handle_here = lambda conn: order.append(conn)
    worker.handshakes = deque(f"handshake-{n}" for n in range(10))
    readable, writer = socket.socketpair()
    try:
        writer.send(b"x")  # another connection with something to read (a /livez request, say)
        worker.poller.register(readable, selectors.EVENT_READ, lambda sock: order.append("other"))
        started = time.monotonic()
        worker.wait_for_and_dispatch_events(timeout=5.0)  # no sleep while handshakes wait
        assert order == ["other", *(f"handshake-{n}" for n in range(HANDSHAKES_PER_TURN))]
        worker.poller.unregister(readable)
        while worker.handshakes:
            worker.wait_for_and_dispatch_events(timeout=5.0)
        assert time.monotonic() - started < 1.0
        assert order[1:] == [f"handshake-{n}" for n in range(10)]
    finally:
        readable.close()
        writer.close()
        worker.poller.close()


def test_one_readiness_of_the_listener_accepts_every_waiting_connection():
    worker = object.__new__(RequestReadingWorker)
    worker.cfg = SimpleNamespace(is_ssl=False)
    worker.connections, worker.max_per_address, worker.trusted_proxies = {}, 100, ()
    worker.nr_conns, worker.worker_connections = 0, 1000
    read: list[object] = []
    worker._read_request = read.append
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(10)]
    try:
        time.sleep(0.2)  # all ten in the listen backlog
        worker.accept(listener)  # before: one connection per call (gunicorn's), the rest waited for later turns
        assert len(read) == 10 and worker.nr_conns == 10 and worker.connections == {"127.0.0.1": 10}
        worker.accept(listener)  # nothing waiting: returns at once
        assert len(read) == 10
    finally:
        for conn in read:
            conn.sock.close()
        for client in clients:
            client.close()
        listener.close()


@pytest.mark.integration
def test_a_websocket_connects_and_subscribes_while_every_pool_thread_is_busy(server_factory):
    server = server_factory(ALLOW_ANONYMOUS="1", WEBSOCKET_TRANSPORT="shared", GUNICORN_THREADS=str(THREADS),
                            ADMISSION_RESERVE_THREADS="1", SIGNALBOARD_APP="tests.apps.busy_pool:create_app()")
    opened: list[RawWebSocket] = []
    subscribed_websocket(server.port, opened)  # the loop, the handler threads and every lazy import are warm
    answers: list[int] = []

    def hold() -> None:
        answers.append(requests.get(f"{server.url}/test/hold?seconds={HOLD_SECONDS}", timeout=30).status_code)

    holders = [threading.Thread(target=hold) for _ in range(THREADS)]
    for thread in holders:
        thread.start()
    time.sleep(1.0)  # every pool thread is in /test/hold now
    started = time.monotonic()
    try:
        subscribed_websocket(server.port, opened)  # handshake, namespace connect, subscribe with its ack
        took = time.monotonic() - started
        # Before, the handshake waited in the pool's queue until a held request ended (about 5 s from here).
        assert took < HOLD_SECONDS / 3, took
        assert answers == []  # the pool really was busy the whole time
    finally:
        for ws in opened:
            ws.close()
        for thread in holders:
            thread.join(30)
    assert answers == [200] * THREADS
    assert server.bad_log_lines() == []
