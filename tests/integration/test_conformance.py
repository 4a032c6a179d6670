"""The five places where python-engineio/python-socketio answered the official Socket.IO protocol test-suite
(github.com/socketio/socket.io-protocol, test-suite/) differently from the Node reference server, checked here against
the real server with the reference's expected answers (docs/conformance.md says why the suite itself cannot run)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from tests.eio import EIO_PATH, PollingSession, RawWebSocket

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["shared", "threaded"])
def server(request):
    from tests.server import ServerProcess

    with ServerProcess(ALLOW_ANONYMOUS=1, WEBSOCKET_TRANSPORT=request.param, PING_INTERVAL=5, PING_TIMEOUT=5) as srv:
        yield srv


def test_a_close_packet_answers_the_pending_poll_with_a_noop(server):
    session = PollingSession(server.url)
    result = {}
    poll = threading.Thread(target=lambda: result.update(response=session.get()))
    poll.start()
    time.sleep(0.3)  # the GET is waiting for packets
    assert session.post("1").status_code == 200
    poll.join(timeout=10)
    assert result["response"].status_code == 200 and result["response"].text == "6"
    assert session.get().status_code == 400


@pytest.mark.parametrize("query", ["EIO=4", "EIO=4&transport=abc"])
def test_a_handshake_without_a_known_transport_is_400(server, query):
    response = requests.get(f"{server.url}/socket.io/?{query}", timeout=5)
    assert response.status_code == 400 and response.json() == {"code": 0, "message": "Transport unknown"}


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_handshake_with_another_method_than_get_is_400(server, method):
    response = requests.request(method, server.url + EIO_PATH.format(transport="polling"), timeout=5)
    assert response.status_code == 400 and response.json() == {"code": 2, "message": "Bad handshake method"}


def test_an_unknown_namespace_gets_the_reference_connect_error(server):
    ws = RawWebSocket(server.port)
    try:
        ws.sock.settimeout(5)
        assert ws.recv().startswith("0")
        ws.send("40/random")
        assert ws.recv() == '44/random,{"message":"Invalid namespace"}'
        ws.send("40")  # the session itself carries on
        assert json.loads(ws.recv()[2:])["sid"]
    finally:
        ws.close()


def test_a_second_websocket_for_an_upgraded_session_is_refused(server):
    """The reference accepts it and closes it at once; here it is refused with 400 before the handshake (both end
    the second connection without touching the session; docs/conformance.md)."""
    session = PollingSession(server.url)
    first = RawWebSocket(server.port, sid=session.sid)
    try:
        assert first.status == 101
        first.sock.settimeout(5)
        first.send("2probe")
        assert first.recv() == "3probe"
        first.send("5")
        # A namespace connect answered over the first websocket: the upgrade is complete (with the threaded
        # transport python-engineio marks it in its handler thread, which a second request could otherwise beat).
        assert _connected(first)
        second = RawWebSocket(server.port, sid=session.sid)
        try:
            assert second.status == 400
        finally:
            second.close()
        first.send('42["no-such-event"]')
        first.send("41")
        first.send("40")
        assert _connected(first)  # the upgraded session is untouched
    finally:
        first.close()


def _connected(ws: RawWebSocket) -> bool:
    ws.send("40")
    while True:
        answer = ws.recv()
        if answer is None or answer.startswith("40"):
            return answer is not None
