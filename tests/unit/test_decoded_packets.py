"""integration/decoded_packets.py: a Socket.IO message is decoded once, by the message guard; python-socketio takes
the guard's packet instead of decoding the text again, and builds and decodes every other packet as before."""

from __future__ import annotations

from types import SimpleNamespace

import socketio
from socketio import packet as sio_packet

from integration.decoded_packets import DecodedOncePacket, install_decoded_packets, reuse
from utils.malformed_input import socketio_message_guard


def counting_decodes(monkeypatch) -> list[str]:
    decoded: list[str] = []
    original = sio_packet.Packet.decode

    def decode(self, encoded_packet):
        decoded.append(encoded_packet)
        return original(self, encoded_packet)

    monkeypatch.setattr(sio_packet.Packet, "decode", decode)
    return decoded


def guarded_server():
    server = socketio.Server(async_mode="threading", async_handlers=False)
    assert install_decoded_packets(server)
    events: list[tuple[str, object]] = []
    server.on("subscribe", lambda sid, data: events.append(("subscribe", data)))
    server.manager.is_connected = lambda sid, namespace: True  # no namespace connect needed for _handle_event
    server.eio.sockets["eio-1"] = SimpleNamespace(closed=False)
    guard = socketio_message_guard(server)
    return server, guard, events


def test_the_guard_and_python_socketio_decode_a_message_once(monkeypatch):
    server, guard, events = guarded_server()
    decoded = counting_decodes(monkeypatch)
    text = '2["subscribe",{"channel":"news"}]'
    guard("eio-1", text, lambda: server._handle_eio_message("eio-1", text))
    assert events == [("subscribe", {"channel": "news"})]
    assert decoded == [text]  # before: the guard's decode, then python-socketio's own


def test_a_malformed_message_is_still_refused_and_not_delivered(monkeypatch):
    server, guard, events = guarded_server()
    closed: list[str] = []
    server.eio.sockets["eio-1"] = SimpleNamespace(closed=False, sid="eio-1",
                                                   close=lambda **kwargs: closed.append("closed"))
    delivered: list[str] = []
    guard("eio-1", '2{"not": "a list"}', lambda: delivered.append("delivered"))
    assert delivered == [] and closed == ["closed"] and events == []


def test_other_packets_are_python_socketios_own():
    sent = DecodedOncePacket(sio_packet.EVENT, data=["tick", {"n": 1}], namespace="/")
    assert sent.encode() == sio_packet.Packet(sio_packet.EVENT, data=["tick", {"n": 1}]).encode()
    guard_packet = sio_packet.Packet(encoded_packet='2["a"]')
    other = '2["b"]'
    with reuse('2["a"]', guard_packet):
        assert DecodedOncePacket(encoded_packet=other).data == ["b"]  # another text: decoded
    text = '2["c"]'
    with reuse(text, sio_packet.Packet(encoded_packet=text)):
        assert DecodedOncePacket(encoded_packet=text).data == ["c"]
        assert DecodedOncePacket(encoded_packet=text).data == ["c"]  # taken once; the second decodes
    assert DecodedOncePacket(encoded_packet=text).data == ["c"]  # outside the block: decoded


def test_a_custom_serializer_is_left_alone():
    class Custom(sio_packet.Packet):
        pass

    server = socketio.Server(async_mode="threading", serializer=Custom)
    assert not install_decoded_packets(server) and server.packet_class is Custom
