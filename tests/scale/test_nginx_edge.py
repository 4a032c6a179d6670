"""deploy/nginx.conf's edge limits with real nginx in front of a real instance: slow request heads are closed at
client_header_timeout, slow bodies are read by nginx (they hold no gunicorn thread) and a stalled one is closed at
client_body_timeout, one address past the request burst gets 429, while clients on another address are served."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest
import requests
import socketio

from tests.server import ServerProcess

pytestmark = [pytest.mark.scale, pytest.mark.integration]

HEADER_TIMEOUT = 10  # client_header_timeout and client_body_timeout in deploy/nginx.conf
OTHER_ADDRESS = "127.0.0.2"  # a legitimate client from another address (the whole of 127/8 is local)
THREADS = 8


@pytest.fixture(scope="module")
def instance():
    with ServerProcess(GUNICORN_THREADS=THREADS, ALLOW_ANONYMOUS=1) as server:
        yield server
        assert server.bad_log_lines() == []


@pytest.fixture
def proxy(instance, nginx_factory):
    return nginx_factory([instance.port])


def timed_get(port: int, path: str = "/livez", source: str = OTHER_ADDRESS) -> tuple[int, float]:
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    finally:
        connection.close()
    return status, time.monotonic() - started


def test_socketio_works_through_nginx(proxy):
    for transport in ("websocket", "polling"):
        client = socketio.Client(reconnection=False)
        client.connect(proxy.url, transports=[transport], wait_timeout=10)
        try:
            assert client.transport() == transport
        finally:
            client.disconnect()


def test_a_slow_request_head_is_closed_at_the_header_timeout(proxy):
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=HEADER_TIMEOUT + 10)
    started = time.monotonic()
    closed_after = None
    try:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        while time.monotonic() - started < HEADER_TIMEOUT + 8:
            try:
                sock.sendall(b"X")  # one byte of an endless header line a second
            except OSError:
                closed_after = time.monotonic() - started
                break
            status, seconds = timed_get(proxy.port)
            assert status == 200 and seconds < 1, (status, seconds)  # others are served meanwhile
            sock.settimeout(1)
            try:
                if sock.recv(4096) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                pass
            except OSError:
                closed_after = time.monotonic() - started
                break
    finally:
        sock.close()
    assert closed_after is not None, "nginx kept a dribbling request head open"
    assert HEADER_TIMEOUT - 1 <= closed_after <= HEADER_TIMEOUT + 3, closed_after


def test_slow_bodies_hold_no_app_thread(instance, proxy):
    """More dribbling POST /login bodies than the instance has threads: nginx reads them, the app never sees them."""
    stop = threading.Event()
    socks = []
    for _ in range(THREADS * 3):
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 1000\r\n\r\npassword=")
        socks.append(sock)

    def dribble() -> None:
        while not stop.wait(2):
            for sock in socks:
                try:
                    sock.sendall(b"a")
                except OSError:
                    pass

    dribbler = threading.Thread(target=dribble)
    dribbler.start()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            for port in (proxy.port, instance.port):  # through nginx, and the instance itself
                status, seconds = timed_get(port)
                assert status == 200 and seconds < 1, (port, status, seconds)
            time.sleep(0.5)
    finally:
        stop.set()
        dribbler.join(timeout=10)
        for sock in socks:
            sock.close()


def test_a_stalled_body_is_closed_at_the_body_timeout(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=HEADER_TIMEOUT + 10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npassword=")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        elapsed = time.monotonic() - started
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert HEADER_TIMEOUT - 1 <= elapsed <= HEADER_TIMEOUT + 3, elapsed


def test_one_address_past_the_burst_gets_429_and_others_are_served(proxy):
    session = requests.Session()
    statuses = [session.get(proxy.url + "/livez", timeout=10).status_code for _ in range(300)]
    assert statuses[:200] == [200] * 200, statuses[:200]
    assert statuses.count(429) >= 50 and set(statuses) == {200, 429}, statuses
    status, seconds = timed_get(proxy.port)
    assert status == 200 and seconds < 1
    assert "limiting requests" in proxy.error_log()
