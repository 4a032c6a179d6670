"""Graceful shutdown against the real server: SIGTERM to the gunicorn master, real Socket.IO clients on both
transports. Each client must get the reconnect hint and then a plain server disconnect, nothing else; /readyz must
turn 503 at once; the master must exit 0 long before the graceful timeout, with nothing bad in the log."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests
import socketio

from tests.eio import PollingSession

pytestmark = pytest.mark.integration

# Long, so that a worker the drain failed to empty would visibly sit it out (and be SIGKILLed, an ERROR line), while
# a loaded test machine still has room: the bounds below are half of it.
GRACEFUL_TIMEOUT = 30
RECONNECT_EVENT = "signalboard:reconnect"


@dataclass
class Watched:
    """A real python-socketio client and everything it saw."""

    transport: str
    client: socketio.Client = field(default_factory=lambda: socketio.Client(reconnection=False))
    seen: list[tuple[float, str, object]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def connect(self, url: str) -> Watched:
        self.client.on(RECONNECT_EVENT, lambda data: self.seen.append((time.monotonic(), "reconnect", data)))
        self.client.on("connect_error", lambda data: self.seen.append((time.monotonic(), "connect_error", data)))

        def disconnected(reason=None):
            self.seen.append((time.monotonic(), "disconnect", reason))
            self.done.set()

        self.client.on("disconnect", disconnected)
        self.client.connect(url, transports=[self.transport], wait_timeout=5)
        return self

    def kinds(self) -> list[str]:
        return [kind for _, kind, _ in self.seen]


class ClientLogProblems(logging.Handler):
    """Warnings and errors the client libraries log (a failed request, an unexpected packet...)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture
def client_log_problems():
    handler = ClientLogProblems()
    loggers = [logging.getLogger(name) for name in ("socketio.client", "engineio.client")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.lines
    for logger in loggers:
        logger.removeHandler(handler)


def start(server_factory, **env):
    return server_factory(ALLOW_ANONYMOUS="1", GUNICORN_GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT), **env)


def connect_clients(server, count_each: int) -> list[Watched]:
    clients = [Watched(transport).connect(server.url) for transport in ("websocket", "polling") * count_each]
    server.wait_until(lambda: server.readyz()["clients"] == {"websocket": count_each, "polling": count_each, "sse": 0},
                      timeout=10, what="every client connected")
    return clients


def test_sigterm_drains_every_client_and_exits_early(server_factory, client_log_problems):
    server = start(server_factory, DRAIN_NOTICE_SECONDS="3")
    clients = connect_clients(server, 3)
    sent_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)

    # At once (the master passes the signal on to the worker, so a request may still beat it by a few ms): not
    # ready, with the reason, and new Socket.IO sessions refused (the worker still answers HTTP).
    response = requests.get(server.url + "/readyz", timeout=5)
    while response.status_code == 200 and time.monotonic() - sent_at < 2.5:
        time.sleep(0.02)
        response = requests.get(server.url + "/readyz", timeout=5)
    assert response.status_code == 503 and response.json()["reasons"]["drain"] == "shutting down"
    assert time.monotonic() - sent_at < 2.5
    refused = requests.get(server.url + "/socket.io/?EIO=4&transport=polling", timeout=5)
    assert refused.status_code == 503 and refused.json()["reason"] == "draining" and "Retry-After" in refused.headers

    for watched in clients:
        assert watched.done.wait(10), f"{watched.transport} client was never disconnected: {watched.seen}"
    assert server.process.wait(timeout=GRACEFUL_TIMEOUT) == 0
    exited_after = time.monotonic() - sent_at

    for watched in clients:
        assert watched.kinds() == ["reconnect", "disconnect"], (watched.transport, watched.seen)
        (told_at, _, hint), reason = watched.seen[0], watched.seen[1][2]
        # Back after the 3 s notice, when this server refuses connections rather than answering 503: 0.5-5 s later.
        assert hint["reason"] == "server_shutdown" and 500 <= hint["retry_after_ms"] <= 3000 + 5000
        assert told_at + hint["retry_after_ms"] / 1000 >= sent_at + 3 + 0.5, (told_at - sent_at, hint)
        assert reason == socketio.Client.reason.SERVER_DISCONNECT
    assert len({watched.seen[0][2]["retry_after_ms"] for watched in clients}) > 1  # jittered
    assert client_log_problems == []
    # 3 s notice, then gunicorn closes idle keep-alive connections (2 s at most): about 5 s on an idle machine.
    assert exited_after < GRACEFUL_TIMEOUT / 2, exited_after
    assert server.bad_log_lines() == []
    assert "graceful shutdown: 6 sessions drained (0 closed by the server)" in server.log()


def test_after_the_notice_new_connections_are_refused_and_the_port_is_free(server_factory, client_log_problems):
    """Once the notice is over, a client coming back meets a refused connect (never a 5xx) while the drain goes on
    over the connections it has, and a new server could already bind the port. (Websockets only: while long-polling
    sessions are left the listener stays open for their polls, which test_clients_are_disconnected_in_batches and
    the first test here see through: every polling client gets its hint and its disconnect.)"""
    server = start(server_factory, DRAIN_BATCH_SIZE="1", DRAIN_NOTICE_SECONDS="1")
    clients = [Watched("websocket").connect(server.url) for _ in range(5)]
    server.wait_until(lambda: server.readyz()["clients"]["websocket"] == 5, timeout=10, what="every client connected")
    # Five batches of one, about a second apart: the drain outlasts the notice.
    sent_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    refused_at = None
    while refused_at is None and time.monotonic() - sent_at < 5:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            time.sleep(0.05)
        except ConnectionRefusedError:
            refused_at = time.monotonic()
    assert refused_at is not None and refused_at - sent_at >= 1, "new connections were accepted throughout"
    assert server.process.poll() is None and not all(watched.done.is_set() for watched in clients)
    successor = socket.socket()
    successor.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
    with successor:
        successor.bind(("127.0.0.1", server.port))
        successor.listen()
    for watched in clients:
        assert watched.done.wait(15), watched.seen
        assert watched.kinds() == ["reconnect", "disconnect"], (watched.transport, watched.seen)
    assert server.process.wait(timeout=GRACEFUL_TIMEOUT) == 0
    assert client_log_problems == []
    assert server.bad_log_lines() == []


def test_clients_are_disconnected_in_batches(server_factory, client_log_problems):
    server = start(server_factory, DRAIN_BATCH_SIZE="2", DRAIN_NOTICE_SECONDS="0")
    clients = connect_clients(server, 3)
    server.process.send_signal(signal.SIGTERM)
    for watched in clients:
        assert watched.done.wait(15), watched.seen
    assert server.process.wait(timeout=GRACEFUL_TIMEOUT) == 0
    done = [watched for watched in clients if watched.kinds() == ["reconnect", "disconnect"]]
    assert len(done) == 6, [(w.transport, w.seen) for w in clients]
    disconnected = sorted(watched.seen[1][0] for watched in done)
    # Three batches of two, started 1 s apart (the most the drain waits between batches)...
    assert disconnected[2] - disconnected[0] >= 0.5 and disconnected[4] - disconnected[2] >= 0.5, disconnected
    # ...and every client was told when to come back before the batches went on (the hints go first, together).
    assert max(watched.seen[0][0] for watched in done) < disconnected[2], [w.seen for w in done]
    assert client_log_problems == []
    assert server.bad_log_lines() == []


def test_a_dashboard_page_gets_the_hint_on_its_own_namespace(server_factory, client_log_problems):
    """The dashboard page joins only '/dashboard', never '/': the hint must reach it there."""
    from tests.browser.test_dashboard_origin import logged_in_cookie_and_token

    server = start(server_factory, DRAIN_NOTICE_SECONDS="0")
    cookie, csrf = logged_in_cookie_and_token(server)
    page = socketio.Client(reconnection=False)
    seen: list[tuple[str, object]] = []
    gone = threading.Event()
    page.on(RECONNECT_EVENT, lambda data: seen.append(("reconnect", data)), namespace="/dashboard")
    page.on("disconnect", lambda reason=None: (seen.append(("disconnect", reason)), gone.set()), namespace="/dashboard")
    # Polling: the websocket client library sends an Origin of its own, and two Origin headers are refused.
    page.connect(server.url, namespaces=["/dashboard"], transports=["polling"], auth={"csrf": csrf},
                 headers={"Cookie": f"session={cookie}", "Origin": server.url}, wait_timeout=5)
    server.process.send_signal(signal.SIGTERM)
    assert gone.wait(15), seen
    assert server.process.wait(timeout=GRACEFUL_TIMEOUT) == 0
    assert [kind for kind, _ in seen] == ["reconnect", "disconnect"], seen
    assert seen[0][1]["reason"] == "server_shutdown"
    assert client_log_problems == []
    assert server.bad_log_lines() == []


def answer_pings_ignore_the_rest(session: PollingSession, packets: list[str]) -> None:
    """A raw polling client that stays alive (pongs every ping) but ignores the Socket.IO disconnect."""
    try:
        while True:
            response = session.get()
            if response.status_code != 200:  # 400: the session was closed between two polls
                packets.append(str(response.status_code))
                return
            for packet in response.text.split("\x1e"):
                packets.append(packet)
                if packet == "2":
                    session.post("3")
                elif packet == "1":  # Engine.IO close: the server ended the session
                    return
    except requests.ConnectionError:  # the server has already exited
        packets.append("gone")


def test_a_client_that_ignores_the_disconnect_is_closed(server_factory):
    server = start(server_factory, DRAIN_NOTICE_SECONDS="0")
    stubborn = PollingSession(server.url)
    assert stubborn.post("40").status_code == 200  # joins '/'
    packets: list[str] = []
    poller = threading.Thread(target=answer_pings_ignore_the_rest, args=(stubborn, packets), daemon=True)
    poller.start()
    server.wait_until(lambda: "2" in packets, what="the first ping answered")
    sent_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=GRACEFUL_TIMEOUT) == 0
    assert time.monotonic() - sent_at < GRACEFUL_TIMEOUT / 2
    poller.join(timeout=5)
    # Asked to leave; then the session ended under it: a close packet, or a 400 or a closed server on its next poll.
    assert "41" in packets and packets[-1] in ("1", "400", "gone") and not poller.is_alive(), packets
    assert "graceful shutdown: 1 sessions drained (1 closed by the server)" in server.log()
    assert server.bad_log_lines() == []


def test_quick_shutdown_closes_websockets_so_the_worker_exits(server_factory, client_log_problems):
    server = start(server_factory)
    clients = connect_clients(server, 1)
    sent_at = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=GRACEFUL_TIMEOUT) == 0
    # Without worker_int closing the sessions, the worker's exit waits on the websocket's thread until gunicorn
    # kills it at the graceful timeout (logged at ERROR).
    assert time.monotonic() - sent_at < GRACEFUL_TIMEOUT / 2
    for watched in clients:
        assert watched.done.wait(5), watched.seen
    assert server.bad_log_lines() == []
