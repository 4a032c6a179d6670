"""A server with few file descriptors: the websocket cap follows the limit, and running out answers 503, not EMFILE.

The server process gets RLIMIT_NOFILE 256 (soft and hard, as `ulimit -n 256` would) and raw-socket clients fill
it. Held clients stay connected, the worker is the same process afterwards, and the log has no ERROR or traceback.
"""

from __future__ import annotations

import re
import socket

import pytest
import requests

from tests.eio import RawWebSocket, websocket_request

pytestmark = pytest.mark.integration

LIMIT = 256
HEADROOM = 64  # utils/descriptors.py: max(64, 10% of the limit)
# Raw clients that never answer a ping: long ping times keep them connected while the test fills the limit.
QUIET_CLIENTS = {"ALLOW_ANONYMOUS": "1", "WEBSOCKET_TRANSPORT": "shared", "PING_INTERVAL": "60", "PING_TIMEOUT": "60"}


def open_until_refused(port: int, at_most: int) -> tuple[list[RawWebSocket], int]:
    """Open websockets until one is answered with something else than 101; that status (or 0 for an EOF)."""
    held: list[RawWebSocket] = []
    for _ in range(at_most):
        try:
            ws = RawWebSocket(port)
        except ConnectionError:
            return held, 0
        if ws.status != 101:
            ws.close()
            return held, ws.status
        held.append(ws)
    return held, 101


def refusal_of(port: int) -> tuple[int, str]:
    """Status and Retry-After of a direct websocket handshake, read from the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(websocket_request(port))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    if not head:
        return 0, ""
    retry = re.search(rb"(?i)\r\nretry-after: *(\d+)", head)
    return int(head.split(b" ", 2)[1]), retry.group(1).decode() if retry else ""


def unprompted_answer(sock: socket.socket) -> int:
    """The status the server sent on a connection without being asked (0: nothing within the timeout)."""
    try:
        head = sock.recv(4096)
    except TimeoutError:
        return 0
    return int(head.split(b" ", 2)[1]) if b"\r\nRetry-After: " in head else -1


def still_open(ws: RawWebSocket) -> bool:
    """The server still serves this websocket: a Socket.IO namespace connect is answered."""
    ws.send("40")
    for _ in range(5):  # the OPEN packet may still be unread
        frame = ws.recv()
        if frame is None:
            return False
        if frame.startswith("40"):
            return True
    return False


def test_the_default_cap_leaves_headroom_so_livez_answers_at_the_cap(server_factory):
    server = server_factory(descriptor_limit=LIMIT, **QUIET_CLIENTS)
    cap = LIMIT - HEADROOM
    assert f"descriptor limit {LIMIT}: up to {cap} websockets (MAX_WEBSOCKET_CLIENTS derived" in server.log()
    assert server.readyz()["budget"]["websocket_capacity"] == cap
    held, status = open_until_refused(server.port, cap + 5)
    try:
        assert (len(held), status) == (cap, 503)
        assert refusal_of(server.port)[0] == 503
        assert requests.get(server.url + "/livez", timeout=5).status_code == 200
        assert still_open(held[0]) and still_open(held[-1])
    finally:
        for ws in held:
            ws.reset()
    assert server.bad_log_lines() == []


def test_running_out_of_descriptors_answers_503_and_the_worker_carries_on(server_factory):
    # A cap set above what the limit allows: the descriptors run out before the cap does.
    server = server_factory(descriptor_limit=LIMIT, **QUIET_CLIENTS,
                            MAX_WEBSOCKET_CLIENTS="1000")
    assert "above what the limit leaves" in server.log()
    worker = server.worker_pid()
    held, status = open_until_refused(server.port, LIMIT)
    extra: list[socket.socket] = []
    try:
        assert LIMIT - HEADROOM < len(held) < LIMIT and status == 503, (len(held), status)
        # Idle connections on top: the descriptor accept() needs is not there (a take-over needs two, so up to two
        # may be left), so accept() is refused 503 + Retry-After, unasked, instead of EMFILE ending the worker.
        # (Closes finishing in the worker meanwhile may free one or two more: 10 connections, at least 5 refused.)
        for _ in range(10):
            extra.append(socket.create_connection(("127.0.0.1", server.port), timeout=1))
        refused_at_accept = [unprompted_answer(sock) for sock in extra]
        assert set(refused_at_accept) <= {0, 503} and refused_at_accept.count(503) >= 5, refused_at_accept
        # More handshakes while full: each is refused 503 + Retry-After (by the take-over or by accept()), none
        # gets an EOF.
        answers = [refusal_of(server.port) for _ in range(10)]
        assert all(code == 503 and retry.isdigit() for code, retry in answers), answers
        assert still_open(held[0]) and still_open(held[-1])
        for ws in held[:20]:
            ws.reset()
        for sock in extra:
            sock.close()
        extra.clear()
        server.wait_until(lambda: requests.get(server.url + "/livez", timeout=5).status_code == 200, timeout=10,
                          what="/livez once descriptors are free")
        assert server.worker_pid() == worker
        assert still_open(held[-2])  # (each client connects its namespace once)
    finally:
        for sock in extra:
            sock.close()
        for ws in held[20:]:
            ws.reset()
    assert "out of file descriptors (limit 256)" in server.log()
    assert server.bad_log_lines() == []
