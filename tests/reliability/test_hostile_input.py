"""Hostile and malformed Engine.IO/Socket.IO input against the real server: each gets the protocol's error or a close,
at most one WARNING line per client, no ERROR or traceback, and the healthy subscribers beside it miss nothing."""

from __future__ import annotations

import json

import pytest
import requests

from tests.eio import PollingSession, RawWebSocket
from tests.reliability.support import (
    Api,
    Bystanders,
    RawSocketIO,
    frame,
    log_length,
    probe_alive,
    reliability_server,
    warning_lines,
)

pytestmark = pytest.mark.integration

MAX_BUFFER = 65536  # MAX_HTTP_BUFFER_SIZE in support.RELIABILITY_ENV
SESSION_UNKNOWN = {"code": 1, "message": "Session ID unknown"}
BAD_REQUEST = {"code": 3, "message": "Bad request"}


server = reliability_server(clean_log=False)


@pytest.fixture(scope="module")
def api(server):
    return Api(server)


@pytest.fixture(scope="module")
def bystanders(server, api):
    watching = Bystanders(server, api)
    yield watching
    watching.close()


@pytest.fixture(scope="module")
def token(api):
    return api.token("hostile", ["**"])


@pytest.fixture
def one_client_at_most_one_warning(server, bystanders):
    """Every test here is one hostile client: it may cause one WARNING line, never an ERROR, and the bystanders
    keep getting every message."""
    start = log_length(server)
    yield
    bystanders.check(2)
    assert server.bad_log_lines() == []
    new = warning_lines(server, start)
    assert len(new) <= 1, new


def polling_session(server, token):
    session = PollingSession(server.url)
    assert session.post("40" + json.dumps({"token": token})).text == "OK"
    assert session.get().text.startswith("40")
    return session


def assert_session_gone(session):
    response = session.get()
    assert response.status_code == 400 and response.json() == SESSION_UNKNOWN, response.text


# Polling POST bodies for a live, connected session: what the server must answer, and whether it closes the session.
POLLING_BODIES = {
    "engineio type 9": (b"9", 400, True),
    "engineio OPEN from a client": (b"0", 400, True),
    "engineio PING from a client": (b"2", 400, True),
    "engineio NOOP from a client": (b"6", 400, True),
    "type not a digit": (b"x", 400, True),
    "non-UTF-8 bytes": (b"\xff\xfe\xfd", 400, True),
    "non-UTF-8 inside a message": (b"42\xff[\"x\"]", 400, True),
    "bad base64 binary": (b"b!!!!", 200, True),
    "17 packets (over the 16 a payload may hold)": (b"\x1e".join([b"3"] * 17), 400, True),
    "oversized payload": (b"4" + b"a" * (MAX_BUFFER + 1), 413, True),
    "truncated JSON event": (b'42["subscribe",{"channel":"x"}', 200, True),
    "Socket.IO type 9": (b"49", 200, True),
    "Socket.IO CONNECT_ERROR from a client": (b'44{"message":"x"}', 200, True),
    "event that is not a list": (b'42{"a":1}', 200, True),
    "event without a name": (b"42[]", 200, True),
    "event name not a string": (b"42[1,2]", 200, True),
    "empty Socket.IO packet": (b"4", 200, True),
    "ack that is not a list": (b"431", 200, True),
    "binary event with 9999999999 attachments": (b'459999999999-["a",{"_placeholder":true,"num":0}]', 200, True),
    "binary event with 0 attachments": (b'450-["a"]', 200, True),
    "JSON nested 30000 deep": (b'42["publish",' + b"[" * 30000 + b"]" * 30000 + b"]", 200, True),
    "JSONP body without d=": (b"d=", 400, True),
    "connect to an unknown namespace": (b"40/nope,", 200, False),
    "binary event for a namespace not joined": (b'451-/dashboard,["a",{"_placeholder":true,"num":0}]', 200, True),
    "three bad packets in one payload (one line)": (b'\x1e'.join([b"4z", b'42{"a":1}', b'450-["a"]']), 200, True),
}


@pytest.mark.parametrize("body, status, closes", POLLING_BODIES.values(), ids=POLLING_BODIES.keys())
def test_malformed_polling_payload(server, token, one_client_at_most_one_warning, body, status, closes):
    session = polling_session(server, token)
    response = requests.post(session.url, data=body, timeout=10)
    assert response.status_code == status, response.text
    if status != 200:
        assert response.json()["code"] == BAD_REQUEST["code"]
    if closes:
        assert_session_gone(session)
    else:
        assert session.get().status_code == 200


@pytest.mark.parametrize(
    "query, message",
    [
        ("EIO=3&transport=polling", "unsupported version"),
        ("EIO=5&transport=polling", "unsupported version"),
        ("EIO=four&transport=polling", "unsupported version"),
        ("transport=polling", "unsupported version"),
        ("EIO=4&transport=carrier-pigeon", "Transport unknown"),  # the Node reference's answer (docs/conformance.md)
        ("EIO=4&transport=websocket", "Invalid websocket upgrade"),  # websocket transport without the upgrade
        ("EIO=4&transport=polling&j=abc", "Invalid JSONP"),
    ],
)
def test_bad_handshake(server, one_client_at_most_one_warning, query, message):
    response = requests.get(f"{server.url}/socket.io/?{query}", timeout=10)
    assert response.status_code == 400 and message in response.text, response.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_sid(server, one_client_at_most_one_warning, method):
    response = requests.request(method, f"{server.url}/socket.io/?EIO=4&transport=polling&sid=not-a-session",
                                data=b"3", timeout=10)
    assert response.status_code == 400 and response.json() == SESSION_UNKNOWN


def test_websocket_for_unknown_sid(server, one_client_at_most_one_warning):
    ws = RawWebSocket(server.port, sid="AAAAAAAAAAAAAAAAAAAA")
    assert ws.status == 400
    ws.close()


def test_upgrade_with_a_sid_from_another_server(server, server_factory, one_client_at_most_one_warning):
    other = server_factory()
    foreign = PollingSession(other.url).sid
    ws = RawWebSocket(server.port, sid=foreign)
    assert ws.status == 400
    ws.close()


def test_second_upgrade_of_an_upgraded_session(server, token, one_client_at_most_one_warning):
    session = polling_session(server, token)
    first = RawWebSocket(server.port, sid=session.sid)
    assert first.status == 101
    first.send("2probe")
    assert first.recv() == "3probe"
    first.send("5")
    # An acked event answered over this websocket proves the server finished the upgrade: python-engineio's threaded
    # handler marks the session upgraded on "5" in its own thread, so without this the second request could come
    # first (and, under load, did).
    first.send('420["subscribe",{"channel":"public:upgrade"}]')
    answers = [first.recv()]
    while answers[-1] == "6" and len(answers) < 3:  # the NOOP that ended the pending long-poll may come first
        answers.append(first.recv())
    assert answers[-1] is not None and answers[-1].startswith("430["), answers
    second = RawWebSocket(server.port, sid=session.sid)
    assert second.status == 400  # python-engineio: "Unexpected HTTP request" for an upgraded session
    second.close()
    first.close()


def test_upgrade_that_never_sends_the_probe(server, token, one_client_at_most_one_warning):
    session = polling_session(server, token)
    ws = RawWebSocket(server.port, sid=session.sid)
    assert ws.status == 101
    ws.send("4garbage")  # anything but "2probe" ends the upgrade; the session carries on over polling
    ws.sock.settimeout(10)
    try:
        ws.recv()
    except (ConnectionError, OSError):
        pass
    assert session.post("3").text == "OK"
    ws.close()


# Text frames on a connected websocket. `closes`: the server must end the connection; otherwise it must still answer.
WEBSOCKET_TEXT = {
    "type not a digit": ("x", True),
    "empty frame": ("", True),
    "truncated JSON event": ('42["subscribe",{"channel":', True),
    "Socket.IO type 9": ("49", True),
    "event not a list": ('42"subscribe"', True),
    "binary event with 9999999999 attachments": ('459999999999-["a",{"_placeholder":true,"num":0}]', True),
    "JSON nested 30000 deep": ('42["publish",' + "[" * 30000 + "]" * 30000 + "]", True),
    "engineio OPEN from a client (ignored by python-engineio)": ("0", False),
    "engineio type 9 (ignored by python-engineio)": ("9", False),
    "unknown namespace": ("40/nope,", False),
}


@pytest.mark.parametrize("text, closes", WEBSOCKET_TEXT.values(), ids=WEBSOCKET_TEXT.keys())
def test_malformed_websocket_text(server, token, one_client_at_most_one_warning, text, closes):
    ws = RawSocketIO(server.port, token)
    ws.send_raw(frame(text.encode()))
    if closes:
        assert ws.closed_by_server(), f"still open after {text[:40]!r}"
    else:
        assert probe_alive(ws), f"no longer answering after {text[:40]!r}"
    ws.close()


@pytest.mark.parametrize(
    "data, why",
    [
        (frame(b"42\xff\xfe", opcode=0x1), "text frame that is not UTF-8"),
        (frame(b"4" + b"a" * (MAX_BUFFER + 10)), "text frame over MAX_HTTP_BUFFER_SIZE"),
        (frame(b"\x00\x01binary", opcode=0x2), "binary frame nobody announced"),
        (frame(b"x", opcode=0x3), "reserved opcode"),
        (frame(b"4", fin=False) + frame(b"2", opcode=0x1), "new text frame inside a fragmented one"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_malformed_websocket_frames(server, token, one_client_at_most_one_warning, data, why):
    ws = RawSocketIO(server.port, token)
    ws.send_raw(data)
    assert ws.closed_by_server(), why
    ws.close()


def test_binary_attachments_that_lie(server, token, one_client_at_most_one_warning):
    """The placeholder points at attachment 5 of 1: the event cannot be rebuilt, the client is closed."""
    ws = RawSocketIO(server.port, token)
    ws.send('451-["publish",{"_placeholder":true,"num":5}]')
    ws.send_raw(frame(b"\x04attachment", opcode=0x2))
    assert ws.closed_by_server()
    ws.close()


def test_text_where_an_attachment_is_due(server, token, one_client_at_most_one_warning):
    ws = RawSocketIO(server.port, token)
    ws.send('451-["publish",{"_placeholder":true,"num":0}]')
    ws.send('42["subscribe",{}]')
    assert ws.closed_by_server()
    ws.close()


def test_every_hostile_client_left(server, bystanders):
    """Runs last in this module: no hostile session lingers, and the bystanders got all of it."""
    server.wait_until(lambda: server.readyz()["clients"] == {"websocket": 1, "polling": 1, "sse": 0}, timeout=40,
                      what="only the two bystanders connected")
    bystanders.check(5)
    assert server.bad_log_lines() == []
