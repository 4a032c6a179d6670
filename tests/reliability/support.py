"""What the reliability tests share: a server with their settings, healthy bystanders, raw Socket.IO speakers and the
process figures (threads, descriptors, memory) that must return to their baseline."""

from __future__ import annotations

import json
import os
import re
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.eio import RawWebSocket
from tests.hub.realtime_client import Api, HubClient, unique
from tests.server import ServerProcess, module_server

# Limits off, so the tests measure what they mean to; a small MAX_HTTP_BUFFER_SIZE makes oversize input cheap.
# Pings of 5 s + 10 s: tests/server.py's 1 s + 1 s drop healthy polling bystanders when a shared 2-core machine
# stalls for a second.
RELIABILITY_ENV = {"API_RATE_LIMIT": 0, "CLIENT_RATE_LIMIT": 0, "MAX_HTTP_BUFFER_SIZE": 65536, "PING_INTERVAL": 5,
                   "PING_TIMEOUT": 10}
START_TIMEOUT = 60.0  # a 2-core machine shared with other test runs can take 20 s to boot gunicorn
_WARNING_LINE = re.compile(r"\[WARNING\]|\"level\": \"WARNING\"")


@contextmanager
def running_server(**env: Any) -> Iterator[ServerProcess]:
    server = ServerProcess(**{**RELIABILITY_ENV, **env})
    try:
        yield server.start(timeout=START_TIMEOUT)
    finally:
        server.__exit__(None, None, None)


def reliability_server(*, clean_log: bool = True, **env: Any) -> Any:
    """The module-scoped `server` fixture with the reliability settings (see tests.server.module_server)."""
    return module_server(clean_log=clean_log, timeout=START_TIMEOUT, **{**RELIABILITY_ENV, **env})


def warning_lines(server: ServerProcess, since: int = 0) -> list[str]:
    return [line for line in server.log().splitlines()[since:] if _WARNING_LINE.search(line)]


def log_length(server: ServerProcess) -> int:
    return len(server.log().splitlines())


class PollingHubClient(HubClient):
    """HubClient over long-polling only, so bystanders cover both transports."""

    def connect(self, auth: Any = None, transports: tuple[str, ...] = ("polling",)) -> HubClient:
        self.sio.connect(self.url, auth=auth, transports=list(transports), wait_timeout=10)
        return self


class Bystanders:
    """Healthy subscribers on both transports; `check` proves they still get every message, in order."""

    def __init__(self, server: ServerProcess, api: Api) -> None:
        self.api = api
        self.channel = unique("bystand")
        token = api.token("bystander", [self.channel])
        self.clients = [HubClient(server.url).connect({"token": token}),
                        PollingHubClient(server.url).connect({"token": token})]
        for client in self.clients:
            ack = client.call("subscribe", {"channel": self.channel})
            assert ack["ok"] is True, ack
        self.published: list[int] = []
        self.server = server

    def check(self, count: int = 1, timeout: float = 30.0) -> None:
        for _ in range(count):
            self.published.append(self.api.publish(self.channel, "tick", {"n": len(self.published)})["offset"])
        for client in self.clients:
            try:
                client.wait_offsets(self.channel, len(self.published), timeout)
            except AssertionError as exc:
                tail = "\n".join(self.server.log().splitlines()[-15:])
                state = "connected" if client.sio.connected else "disconnected"
                raise AssertionError(f"{type(client).__name__} ({state}) missed messages: {str(exc)[:300]}\n"
                                     f"server log:\n{tail}") from None
            got = client.offsets(self.channel)
            assert got == self.published, f"{type(client).__name__} got {got[-5:]}, expected {self.published[-5:]}"

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()


def frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """One masked client frame of any length (tests/eio.py's RawWebSocket stops at 64 KiB)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 65536:
        size = bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        size = bytes([0x80 | 127]) + struct.pack("!Q", length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if length < 65536 else _mask_fast(payload, mask)
    return bytes([(0x80 if fin else 0) | opcode]) + size + mask + masked


def _mask_fast(payload: bytes, mask: bytes) -> bytes:
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[: len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


class RawSocketIO(RawWebSocket):
    """A raw websocket that has done the Engine.IO and Socket.IO handshakes ('0' open, '40' connect)."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 10.0, receive_buffer: int = 0,
                 source: str | None = None) -> None:
        super().__init__(port, receive_buffer=receive_buffer, source=source)
        assert self.status == 101, self.status
        self.sock.settimeout(timeout)
        opening = self.recv()
        assert opening and opening.startswith("0"), opening
        self.send("40" + (json.dumps({"token": token}) if token else ""))
        connected = self.next_message()
        assert connected and connected.startswith("40"), connected

    def next_message(self) -> str | None:
        """Next frame that is not a ping (pings are answered, as a live client does)."""
        while True:
            message = self.recv()
            if message != "2":
                return message
            self.send("3")

    def call(self, ack_id: int, event: str, payload: Any) -> Any:
        self.send(f"42{ack_id}" + json.dumps([event, payload]))
        prefix = f"43{ack_id}"
        while True:
            message = self.next_message()
            assert message is not None, "closed while waiting for an ack"
            if message.startswith(prefix):
                return json.loads(message[len(prefix):])[0]

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True once the server closed (close frame, FIN or RST) within `timeout`; pings are answered meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                if self.next_message() is None:
                    return True
            except (ConnectionError, OSError):
                return True  # FIN (ConnectionError from _read) or RST
            except UnicodeDecodeError:
                continue
        return False


def probe_alive(ws: RawSocketIO, ack_id: int = 99) -> bool:
    """The connection still answers: an unknown event with an ack id gets the namespace's error ack."""
    try:
        ack = ws.call(ack_id, "no-such-event", {})
    except (AssertionError, OSError, ConnectionError):
        return False
    return isinstance(ack, dict) and ack.get("ok") is False


class Figures:
    """What must come back to baseline after load: sessions, threads, descriptors and memory of the worker."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.worker = server.worker_pid()

    def read(self) -> dict[str, int]:
        ready = requests.get(self.server.url + "/readyz", timeout=10).json()
        status = Path(f"/proc/{self.worker}/status").read_text()
        rss = re.search(r"VmRSS:\s+(\d+)", status)
        assert rss, status
        rss_kib = int(rss.group(1))
        return {
            "sessions": ready["clients"]["websocket"] + ready["clients"]["polling"],
            "threads_total": ready["threads"]["total"],
            "threads_other": ready["threads"]["other"],  # not gunicorn's pool, which grows to its size and stays
            "fds": len(os.listdir(f"/proc/{self.worker}/fd")),
            "rss_mib": rss_kib // 1024,
        }

    def settle(self, baseline: dict[str, int], tolerance: dict[str, int], timeout: float = 30.0) -> dict[str, int]:
        """Wait until every figure is within tolerance of `baseline`; return the last reading either way."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.read()
            if all(now[k] - baseline[k] <= tolerance[k] for k in tolerance) or time.monotonic() > deadline:
                return now
            time.sleep(0.5)


__all__ = ["Api", "Bystanders", "Figures", "HubClient", "RawSocketIO", "frame", "log_length", "probe_alive",
           "running_server", "unique", "warning_lines"]
