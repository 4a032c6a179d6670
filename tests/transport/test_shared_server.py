"""The shared transport inside the real server (start.sh, gunicorn gthread): websockets hold no gthread thread and
no per-connection thread, every client gets every broadcast in order, and clients that vanish are cleaned up."""

from __future__ import annotations

import json
import time

import pytest
import requests
import socketio

from tests.eio import PollingSession, RawWebSocket
from tests.server import LivezWatcher

pytestmark = pytest.mark.integration

CHANNEL = "public:transport"
API_KEY = "test-api-key-1-0123456789"


def recv(ws: RawWebSocket) -> str:
    """The next packet that is not a ping; pings are answered, as a real client does."""
    while True:
        text = ws.recv_text()
        if text != "2":
            return text
        ws.send("3")


def subscribed_websocket(port: int, opened: list[RawWebSocket]) -> None:
    ws = RawWebSocket(port)
    opened.append(ws)
    assert ws.status == 101
    assert recv(ws).startswith("0{")
    ws.send("40")
    assert recv(ws).startswith("40")
    ws.send("421" + json.dumps(["subscribe", {"channel": CHANNEL}]))
    ack = recv(ws)
    assert ack.startswith("431") and json.loads(ack[3:])[0]["ok"] is True, ack


def next_event(ws: RawWebSocket) -> list:
    text = recv(ws)
    assert text.startswith("42"), text
    return json.loads(text[2:])


def publish(server, n: int) -> None:
    response = requests.post(server.url + "/api/v1/publish", timeout=5,
                             headers={"Authorization": f"Bearer {API_KEY}"},
                             json={"channel": CHANNEL, "event": "tick", "data": {"n": n}})
    assert response.status_code // 100 == 2, response.text


@pytest.fixture
def shared_server(server_factory):
    return server_factory(ALLOW_ANONYMOUS="1", WEBSOCKET_TRANSPORT="shared", GUNICORN_THREADS="8",
                          ADMISSION_RESERVE_THREADS="3", MAX_WEBSOCKET_CLIENTS="60")


def test_many_websockets_on_eight_threads_with_one_transport_thread(server_factory):
    # Slow pings: the clients below answer them only while the test reads from them.
    server = server_factory(ALLOW_ANONYMOUS="1", WEBSOCKET_TRANSPORT="shared", GUNICORN_THREADS="8",
                            ADMISSION_RESERVE_THREADS="3", MAX_WEBSOCKET_CLIENTS="60", PING_INTERVAL="30",
                            PING_TIMEOUT="30")
    PollingSession(server.url).post("1")  # Engine.IO's monitor task and our loop start with the first session
    time.sleep(0.5)
    before = server.readyz()["threads"]
    clients: list[RawWebSocket] = []
    with LivezWatcher(server) as watcher:
        try:
            for _ in range(40):  # 5x the thread pool
                subscribed_websocket(server.port, clients)
        except BaseException:
            for ws in clients:
                ws.close()
            raise
        ready = server.readyz()
        assert ready["clients"]["websocket"] == 40
        assert ready["budget"]["held_websocket"] == 0 and ready["budget"]["websocket_free"] == 20
        # Stock python-engineio would run 160 threads for these; here the count does not grow with clients. The
        # last clients' connect and subscribe threads may still be ending: their answers are sent (written
        # through) before they return, so the client can ask /readyz first. Those end within moments; 40
        # clients' worth of threads would not.
        deadline = time.monotonic() + 5
        while ready["threads"]["other"] > before["other"] + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
            ready = server.readyz()
        assert ready["threads"]["other"] <= before["other"] + 1, (before, ready["threads"])
        for n in range(5):
            publish(server, n)
        for ws in clients:
            assert [next_event(ws)[1]["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert watcher.failures == [] and max(watcher.latencies) < 1.0
    for ws in clients:
        ws.reset()
    server.wait_until(lambda: sum(server.readyz()["clients"].values()) == 0, timeout=10, what="clients gone")
    assert server.bad_log_lines() == []


def test_the_websocket_cap_answers_503_with_retry_after(server_factory):
    server = server_factory(ALLOW_ANONYMOUS="1", WEBSOCKET_TRANSPORT="shared", MAX_WEBSOCKET_CLIENTS="3")
    held = [RawWebSocket(server.port) for _ in range(3)]
    assert [ws.status for ws in held] == [101] * 3
    server.wait_until(lambda: server.readyz()["budget"]["websocket_free"] == 0, timeout=5, what="cap reached")
    refused = RawWebSocket(server.port)
    refused.close()
    assert refused.status == 503
    polling = requests.get(server.url + "/socket.io/?EIO=4&transport=polling", timeout=5)
    assert polling.status_code == 503 and 1 <= int(polling.headers["Retry-After"]) <= 5
    for ws in held:
        ws.reset()
    server.wait_until(lambda: server.readyz()["budget"]["websocket_free"] == 3, timeout=10, what="cap freed")
    admitted = RawWebSocket(server.port)
    admitted.close()
    assert admitted.status == 101
    assert server.bad_log_lines() == []


def test_polling_clients_upgrade_and_receive_too(shared_server):
    server = shared_server
    received: list[int] = []
    client = socketio.Client(reconnection=False)
    client.on("tick", lambda data, meta=None: received.append(data["n"]))
    client.connect(server.url, transports=["polling", "websocket"], wait_timeout=5)
    try:
        server.wait_until(lambda: client.transport() == "websocket", timeout=5, what="upgrade to websocket")
        assert client.call("subscribe", {"channel": CHANNEL}, timeout=5)["ok"] is True
        for n in range(3):
            publish(server, n)
        server.wait_until(lambda: received == [0, 1, 2], timeout=5, what="three ticks")
        time.sleep(2.5)  # through two 1 s ping cycles: pings run on the shared timer and the client stays
        assert client.connected and server.readyz()["clients"] == {"polling": 0, "websocket": 1, "sse": 0}
    finally:
        client.disconnect()
    server.wait_until(lambda: sum(server.readyz()["clients"].values()) == 0, timeout=10, what="client gone")
    assert server.bad_log_lines() == []


def test_a_silent_client_is_dropped_by_the_ping_timeout(shared_server):
    server = shared_server
    ws = RawWebSocket(server.port)
    assert ws.recv().startswith("0{")
    ws.send("40")
    assert ws.recv().startswith("40")  # within the first 1 s ping interval
    # Never answer the ping: python-engineio's ping timeout (1 s + 1 s here) closes it.
    assert ws.recv() == "2"
    deadline = time.monotonic() + 10
    frames = []
    while time.monotonic() < deadline:
        frame = ws.recv()
        frames.append(frame)
        if frame is None:
            break
    assert frames == [None]  # a websocket close frame (python-engineio skips its own close packet here)
    server.wait_until(lambda: sum(server.readyz()["clients"].values()) == 0, timeout=10, what="client dropped")
    ws.close()
    assert server.bad_log_lines() == []
