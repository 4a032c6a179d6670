"""Websocket bytes built once: the 101 handshake answer and server frames, cached on the Engine.IO packet.

A server frame is never masked (RFC 6455 section 5.1) and the shared transport negotiates no extension, so the
frame for one packet is the same bytes for every recipient. python-socketio's Manager.emit hands the same
Engine.IO packet object to every recipient of a broadcast, so caching the frame on that object means a broadcast
is encoded once however many clients it reaches.
"""

from __future__ import annotations

import struct
from typing import Any

from wsproto.utilities import generate_accept_token

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
_FIN = 0x80
_FRAME_ATTRIBUTE = "_signalboard_frame"


class HandshakeError(ValueError):
    """The upgrade request is not a websocket version 13 request we can answer."""


def encode_frame(payload: bytes, opcode: int = OPCODE_TEXT) -> bytes:
    """One final, unmasked frame carrying `payload`."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", _FIN | opcode, length)
    elif length < 65536:
        header = struct.pack("!BBH", _FIN | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, length)
    return header + payload


def packet_frame(pkt: Any) -> bytes:
    """The frame for an Engine.IO packet, computed on first use and kept on the packet for the next recipient.

    Two threads may compute it at once; both get equal bytes, so the race is harmless.
    """
    frame = getattr(pkt, _FRAME_ATTRIBUTE, None)
    if frame is None:
        encoded = pkt.encode()
        if isinstance(encoded, str):
            frame = encode_frame(encoded.encode("utf-8"), OPCODE_TEXT)
        else:
            frame = encode_frame(bytes(encoded), OPCODE_BINARY)
        setattr(pkt, _FRAME_ATTRIBUTE, frame)
    return frame


def handshake_response(environ: dict[str, Any]) -> bytes:
    """The 101 answer to a websocket upgrade request; no subprotocol, no extension (so frames can be shared)."""
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        raise HandshakeError("Sec-WebSocket-Version must be 13")
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    if not key:
        raise HandshakeError("Sec-WebSocket-Key is missing")
    accept = generate_accept_token(key.encode("ascii", "replace")).decode("ascii")
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode("ascii")
