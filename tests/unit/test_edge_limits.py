"""The edge limits on their own: trusted proxies, per-address slots, atomic admission, the inbound
gate, log escaping, the request reader's body rule and the received-event labels."""

from __future__ import annotations

import ipaddress
import logging
import threading
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from config import default_sessions_per_address, load_config
from extensions import socketio
from integration.request_reader import CHUNKED, PREREAD_BODY_LIMIT, ChunkedBody, body_length
from tests.unit.test_admission import FakeEngineIO, FakeSocket
from transport.inbound import InboundGate, InboundPolicy
from utils.address_limits import AddressLimits
from utils.admission import RESERVATION_KEY, Admission, ThreadBudget
from utils.client_address import is_trusted
from utils.logging_setup import RedactingFormatter, escape_control

NGINX = (ipaddress.ip_network("10.0.0.0/8"),)


def test_trusted_peers_are_recognised_with_or_without_a_port():
    # tests/unit/test_client_address.py covers X-Forwarded-For; the request reader asks about bare peers.
    assert is_trusted("10.0.0.5", NGINX) and is_trusted("10.0.0.5:4242", NGINX)
    assert not is_trusted("198.51.100.1", NGINX) and not is_trusted("garbage", NGINX)


def test_address_slots_are_taken_given_back_and_follow_sessions():
    limits = AddressLimits(max_sessions=2, rate=0, burst=1)
    assert limits.try_take("a") and limits.try_take("a") and not limits.try_take("a")
    assert limits.try_take("b")  # another address has its own slots
    limits.bind("sid-1", "a")
    limits.give_back("a")  # a handshake that made no session
    assert limits.held("a") == 1
    limits.session_closed("sid-1")
    assert limits.held("a") == 0 and limits.addresses() == 1


def test_connect_rate_per_address_has_a_burst():
    limits = AddressLimits(max_sessions=100, rate=1, burst=3)
    waits = [limits.rate_wait("a") for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0] and waits[3] > 0
    assert limits.rate_wait("b") == 0.0


def test_admission_check_and_register_are_one_step_under_a_burst():
    """21 were admitted against a cap of 20 before: the check and the registration were two steps."""
    engine = FakeEngineIO()
    admission = Admission(ThreadBudget(30, 10), engine, lambda: False, 5, engine.start_task, AddressLimits(1000, 0, 1))
    start = threading.Barrier(40)
    results = []

    def handshake(n: int) -> None:
        environ = {"REMOTE_ADDR": f"192.0.2.{n}"}
        start.wait()
        reservation, reason, _ = admission.admit(environ)
        results.append(reason)
        if reservation is not None:  # python-engineio registers the session while the request runs
            engine.sockets[str(n)] = FakeSocket()
            environ[RESERVATION_KEY] = reservation
            admission.on_connect(str(n), environ)
            reservation.release()

    threads = [threading.Thread(target=handshake, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(None) == 20 and results.count("capacity") == 20


def test_admission_refuses_an_address_over_its_slots_with_429():
    engine = FakeEngineIO()
    admission = Admission(ThreadBudget(100, 10), engine, lambda: False, 5, engine.start_task, AddressLimits(2, 0, 1))
    environ = {"REMOTE_ADDR": "192.0.2.1"}
    held = [admission.admit(dict(environ))[0] for _ in range(2)]
    assert admission.admit(dict(environ))[1] == "sessions_per_address"
    held[0].release()  # that handshake made no session: its slot is free again
    assert admission.admit(dict(environ))[1] is None
    captured = {}
    body = b"".join(Admission.refuse("sessions_per_address", lambda s, h: captured.update(s=s, h=dict(h))))
    assert captured["s"].startswith("429") and 1 <= int(captured["h"]["Retry-After"]) <= 5
    assert b"sessions_per_address" in body


def test_the_inbound_gate_closes_on_unjoined_namespaces_and_floods():
    gate = InboundGate(InboundPolicy(rate=1, burst=2, flood_refusals=3))
    assert gate.check('2/admin,["e"]') == ("close", "unjoined_namespace")
    assert gate.check('2["e"]') == ("close", "unjoined_namespace")  # '/' not asked for either
    assert gate.check("2/" + "x" * 300 + ',["e"]') == ("close", "unjoined_namespace")
    assert gate.check("0") == ("pass", None)
    assert gate.check('2["a"]') == ("pass", None) and gate.check('2["b"]') == ("pass", None)
    verdict, ack = gate.check('27["c"]')  # over the burst: not handled, but its ack says why
    assert verdict == "drop" and ack.startswith("37[") and '"rate_limited"' in ack
    assert gate.check('2["d"]') == ("drop", None)
    assert gate.check('2["e"]') == ("close", "flood")


def test_the_inbound_gate_limits_how_many_namespaces_are_asked_for():
    gate = InboundGate(InboundPolicy(rate=0, burst=1, flood_refusals=1))
    for n in range(8):
        assert gate.check(f"0/n{n},") == ("pass", None)
    assert gate.check("0/n9,") == ("close", "too_many_namespaces")


def test_text_logs_escape_control_characters_so_no_line_can_be_forged():
    assert escape_control("a\nb\r\x1b[31m\x85\u2028") == "a\\nb\\r\\x1b[31m\\x85\\u2028"
    formatter = RedactingFormatter("[%(levelname)s] %(message)s")
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "ns %s", ("/x\n[ERROR] forged",), None)
    line = formatter.format(record)
    assert "\n" not in line and line == "[WARNING] ns /x\\n[ERROR] forged"


@pytest.mark.parametrize("head, expected", [
    (b"GET / HTTP/1.1\r\nHost: x", 0),
    (b"POST /login HTTP/1.1\r\nContent-Length: 12", 12),
    (b"POST /x HTTP/1.1\r\ncontent-length: " + str(PREREAD_BODY_LIMIT + 1).encode(), None),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked", CHUNKED),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked", None),
    (b"POST /x HTTP/1.1\r\nContent-Length: abc", None),
])
def test_the_request_reader_preads_bodies_of_known_small_length(head, expected):
    assert body_length(head) == expected


CHUNKED_BODY = b"5;ext=1\r\nhello\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
NEXT_REQUEST = b"GET /livez HTTP/1.1\r\n\r\n"


def test_a_chunked_body_ends_where_its_framing_says_however_its_bytes_arrive():
    whole = b"HEAD\r\n\r\n" + CHUNKED_BODY + NEXT_REQUEST
    start = len(b"HEAD\r\n\r\n")
    assert ChunkedBody(start).end(bytearray(whole)) == start + len(CHUNKED_BODY)
    for cut in range(start, len(whole)):  # the first `cut` bytes arrive, then the rest
        body, buffer = ChunkedBody(start), bytearray(whole[:cut])
        if cut < start + len(CHUNKED_BODY):
            assert body.end(buffer) is None, cut
        buffer += whole[cut:]
        assert body.end(buffer) == start + len(CHUNKED_BODY), cut


@pytest.mark.parametrize("body", [
    b"zz\r\nhello\r\n",  # not a hex size
    b"0x5\r\nhello\r\n",  # Python's int() would take it, HTTP does not
    b"5\r\nhelloXX",  # data not followed by CRLF
    b"5" * 5000,  # a size line that never ends
    f"{PREREAD_BODY_LIMIT:x}\r\n".encode(),  # more than the poller reads ahead
])
def test_a_malformed_or_long_chunked_body_is_left_to_gunicorn(body):
    with pytest.raises(ValueError):
        ChunkedBody(0).end(bytearray(body))


def test_address_limit_defaults_leave_half_the_capacity_to_everyone_else():
    config = load_config({"SECRET_KEY": "k" * 20}, environ={})
    assert default_sessions_per_address(config, 5000) == 500  # 1080 polling sessions, 5000 websockets
    assert default_sessions_per_address(config, 200) == 100  # a websocket cap of 200 (shared transport)
    assert config["MAX_CONNECTIONS_PER_ADDRESS"] == 2048
    small = load_config({"SECRET_KEY": "k" * 20}, environ={"GUNICORN_THREADS": "64"})
    assert default_sessions_per_address(small, 5000) == 28
    threaded = load_config({"SECRET_KEY": "k" * 20},
                           environ={"GUNICORN_THREADS": "64", "WEBSOCKET_TRANSPORT": "threaded"})
    assert default_sessions_per_address(threaded, 0) == 28


def _received(event: str) -> float:
    return REGISTRY.get_sample_value("signalboard_socketio_events_received_total", {"event": event}) or 0.0


def test_event_names_label_only_after_a_namespace_connect(app, monkeypatch):
    """60 invented names before any CONNECT filled the label cap (50), so real events then counted as `other`."""
    monkeypatch.setitem(socketio.server.eio.sockets, "eio-unjoined", SimpleNamespace(closed=False, upgraded=False))
    monkeypatch.setitem(socketio.server.eio.sockets, "eio-joined", SimpleNamespace(closed=False, upgraded=False))
    monkeypatch.setattr(socketio.server.manager, "sid_from_eio_sid",
                        lambda eio_sid, namespace: "sio-sid" if eio_sid == "eio-joined" else None)
    other = _received("other")
    for n in range(60):
        socketio.server.eio._trigger_event("message", "eio-unjoined", f'2["invented{n}"]')
    assert _received("invented0") == 0 and _received("other") == other + 60
    socketio.server.eio._trigger_event("message", "eio-joined", '2["subscribe",{}]')
    assert _received("subscribe") >= 1
