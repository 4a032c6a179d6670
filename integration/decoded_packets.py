"""python-socketio decodes every Engine.IO message the message guard has just decoded: it gets the guard's packet.

utils/malformed_input.py's guard decodes each Socket.IO packet to judge it before python-socketio sees it, and
python-socketio's `Server._handle_eio_message` then decoded the same text again (`self.packet_class(encoded_packet=
data)`), JSON and all. `install_decoded_packets` replaces `Server.packet_class` on the instance with a subclass
that, asked to decode the very text object the guard decoded on this thread (`reuse`), takes the guard's packet's
fields instead of decoding again; everything else (packets python-socketio builds to send, any other text) is
python-socketio's own Packet. Installed only on the default serializer: the guard decodes with that one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from socketio import packet as sio_packet

_DECODED = threading.local()  # text, packet: what the guard decoded for the message now being delivered


@contextmanager
def reuse(text: str, packet: sio_packet.Packet) -> Iterator[None]:
    """While this block runs on this thread, decoding `text` (this object) gives `packet`'s fields."""
    _DECODED.text, _DECODED.packet = text, packet
    try:
        yield
    finally:
        _DECODED.text = _DECODED.packet = None


class DecodedOncePacket(sio_packet.Packet):
    """python-socketio's Packet; decoding the text the guard decoded takes the guard's result (once)."""

    def __init__(self, packet_type: int = sio_packet.EVENT, data: Any = None, namespace: str | None = None,
                 id: int | None = None, binary: bool | None = None, encoded_packet: Any = None) -> None:
        if encoded_packet is not None and encoded_packet is getattr(_DECODED, "text", None):
            decoded = _DECODED.packet
            _DECODED.text = _DECODED.packet = None  # once: a second decode of the same text decodes
            self.__dict__.update(decoded.__dict__)
            return
        super().__init__(packet_type, data, namespace, id, binary, encoded_packet)


def install_decoded_packets(socketio_server: Any) -> bool:
    """Replaces python-socketio's `Server.packet_class` on this instance (the default serializer only); True when
    installed."""
    if socketio_server.packet_class is not sio_packet.Packet:
        return False
    socketio_server.packet_class = DecodedOncePacket
    return True
