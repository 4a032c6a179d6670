"""Raw Engine.IO v4 speakers for tests: plain HTTP polling and hand-made websocket frames, so a test can stop,
reset or misbehave at any byte, as real clients that drop do."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct

import requests

EIO_PATH = "/socket.io/?EIO=4&transport={transport}"


class PollingSession:
    """One Engine.IO session over long-polling, driven request by request."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url
        self.timeout = timeout
        response = requests.get(base_url + EIO_PATH.format(transport="polling"), timeout=timeout)
        response.raise_for_status()
        assert response.text.startswith("0"), response.text
        self.handshake = json.loads(response.text[1:])
        self.sid: str = self.handshake["sid"]

    @property
    def url(self) -> str:
        return f"{self.base_url}{EIO_PATH.format(transport='polling')}&sid={self.sid}"

    def post(self, *packets: str) -> requests.Response:
        return requests.post(self.url, data="\x1e".join(packets).encode(), timeout=self.timeout)

    def get(self) -> requests.Response:
        return requests.get(self.url, timeout=self.timeout)


def raw_connection(port: int, receive_buffer: int = 0, source: str | None = None) -> socket.socket:
    """`receive_buffer` sets a small receive window, before connecting (it cannot grow afterwards); `source` is the
    loopback address to connect from (127.0.0.2, ...), so a test can play several clients."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    if source:
        sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN, as a crashed client or a dropped network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def websocket_request(port: int, sid: str | None = None) -> bytes:
    query = EIO_PATH.format(transport="websocket") + (f"&sid={sid}" if sid else "")
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


class RawWebSocket:
    """A websocket client built from bytes; enough of RFC 6455 for text frames under 64 KiB."""

    def __init__(self, port: int, sid: str | None = None, receive_buffer: int = 0, source: str | None = None) -> None:
        self.sock = raw_connection(port, receive_buffer, source)
        self.sock.sendall(websocket_request(port, sid))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed during handshake: {head!r}")
            head += chunk
        self.status = int(head.split(b" ", 2)[1])
        self.buffer = head.split(b"\r\n\r\n", 1)[1]

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        length = len(payload)
        size = bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + struct.pack("!H", length)
        header = bytes([0x81]) + size
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv(self) -> str | None:
        """Next text frame; None when the server sent a close frame."""
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        payload = self._read(length)
        if first & 0x0F == 0x8:
            return None
        return payload.decode()

    def recv_text(self) -> str:
        """Next text frame, failing the test if the server closed the websocket instead."""
        text = self.recv()
        assert text is not None, "the server closed the websocket"
        return text

    def reset(self) -> None:
        reset(self.sock)

    def close(self) -> None:
        self.sock.close()
