"""Frames and handshake answers of the shared transport, checked against RFC 6455 and wsproto's own parser."""

from __future__ import annotations

import pytest
from engineio import packet as eio_packet
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from transport.frames import HandshakeError, encode_frame, handshake_response, packet_frame


def parse_as_client(data: bytes) -> list:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    return list(client.events())


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_frames_of_every_length_class_parse_back(size):
    payload = "x" * size
    [event] = parse_as_client(encode_frame(payload.encode()))
    assert isinstance(event, TextMessage) and event.data == payload and event.message_finished


def test_binary_packets_become_binary_frames():
    [event] = parse_as_client(packet_frame(eio_packet.Packet(eio_packet.MESSAGE, data=b"\x00\xff")))
    assert isinstance(event, BytesMessage) and event.data == b"\x00\xff"


def test_a_packet_is_encoded_once_however_many_recipients():
    pkt = eio_packet.Packet(eio_packet.MESSAGE, data='2["tick",{"n":1}]')
    first = packet_frame(pkt)
    assert packet_frame(pkt) is first  # the same bytes object: no second encoding
    [event] = parse_as_client(first)
    assert event.data == '42["tick",{"n":1}]'


def test_non_ascii_text_is_utf8():
    [event] = parse_as_client(packet_frame(eio_packet.Packet(eio_packet.MESSAGE, data="héllo ☃")))
    assert event.data == "4héllo ☃"


def test_handshake_answer_uses_the_rfc_accept_token():
    answer = handshake_response({"HTTP_SEC_WEBSOCKET_VERSION": "13",
                                 "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer  # RFC 6455 section 1.3's example
    assert b"Sec-WebSocket-Extensions" not in answer and answer.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("environ", [
    {"HTTP_SEC_WEBSOCKET_VERSION": "8", "HTTP_SEC_WEBSOCKET_KEY": "a2V5"},
    {"HTTP_SEC_WEBSOCKET_VERSION": "13"},
])
def test_bad_handshakes_are_refused(environ):
    with pytest.raises(HandshakeError):
        handshake_response(environ)
