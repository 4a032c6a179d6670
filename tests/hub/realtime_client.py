"""A real python-socketio client that records deliveries and acks in wire order, for the hub's integration tests."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests
import socketio


class WireOrderedClient(socketio.Client):
    """python-socketio hands each incoming message to a new thread, so two deliveries can reach their handlers
    swapped; ordering tests need them in the order they came off the socket, so handle them on the reader thread."""

    def _engineio_client_class(self) -> type:
        base = super()._engineio_client_class()

        class InOrder(base):  # type: ignore[misc, valid-type]
            def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
                if event == "message":
                    kwargs["run_async"] = False
                return super()._trigger_event(event, *args, **kwargs)

        return InOrder


@dataclass(frozen=True)
class Delivery:
    event: str
    data: Any
    meta: dict[str, Any] | None


@dataclass(frozen=True)
class Ack:
    event: str
    body: Any


class HubClient:
    """One Socket.IO connection; `log` holds Delivery and Ack entries in the order the server sent them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = WireOrderedClient(reconnection=False)
        self.log: list[Delivery | Ack] = []
        self.connect_error: Any = None
        # Guards log; the reader thread appends while the test thread reads.
        self._changed = threading.Condition()
        self.sio.on("*", self._on_event)
        self.sio.on("connect_error", self._on_connect_error)

    def connect(self, auth: Any = None, transports: tuple[str, ...] = ("websocket",)) -> HubClient:
        self.sio.connect(self.url, auth=auth, transports=list(transports), wait_timeout=10)
        return self

    @property
    def sid(self) -> str:
        """The connection's sid, as the server's connect answer gave it (what `exclude` names)."""
        sid = self.sio.get_sid("/")
        assert sid is not None, "not connected"
        return sid

    def try_connect(self, auth: Any = None) -> Any:
        """Connect expecting a refusal; return the connect_error data ({"message", "data"})."""
        try:
            self.connect(auth)
        except socketio.exceptions.ConnectionError:
            pass
        assert not self.sio.connected, "the server accepted a connection it should have refused"
        return self.connect_error

    def _on_connect_error(self, data: Any = None) -> None:
        self.connect_error = data

    def _record(self, entry: Delivery | Ack) -> None:
        with self._changed:
            self.log.append(entry)
            self._changed.notify_all()

    def _on_event(self, event: str, *args: Any) -> None:
        data = args[0] if args else None
        meta = args[1] if len(args) > 1 else None
        self._record(Delivery(event, data, meta))

    def call(self, event: str, payload: Any = None, timeout: float = 10.0) -> Any:
        """Emit with an ack callback and return the ack body; the ack is also logged in wire order."""
        done = threading.Event()
        box: list[Any] = []

        def on_ack(*args: Any) -> None:
            box.append(args[0] if args else None)
            self._record(Ack(event, box[0]))
            done.set()

        self.sio.emit(event, payload, callback=on_ack)
        assert done.wait(timeout), f"no ack for {event} within {timeout}s"
        return box[0]

    def deliveries(self, channel: str | None = None) -> list[Delivery]:
        with self._changed:
            entries = [e for e in self.log if isinstance(e, Delivery)]
        return [e for e in entries if channel is None or (e.meta or {}).get("channel") == channel]

    def offsets(self, channel: str) -> list[int]:
        return [d.meta["offset"] for d in self.deliveries(channel) if d.meta is not None]

    def wait_for(self, predicate: Any, timeout: float = 10.0, what: str = "deliveries") -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out waiting for {what}; log: {self.log[-5:]!r}"
                self._changed.wait(remaining)

    def wait_offsets(self, channel: str, count: int, timeout: float = 10.0) -> list[int]:
        self.wait_for(lambda: len(self.offsets(channel)) >= count, timeout, f"{count} messages on {channel}")
        return self.offsets(channel)

    def disconnect(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()


class Api:
    """The HTTP API of one server, with a publisher key."""

    def __init__(self, server: Any, key: str = "test-api-key-1-0123456789") -> None:
        self.base = server.url + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=10, **kwargs)

    def publish(self, channel: str, event: str = "update", data: Any = None) -> dict[str, Any]:
        response = self.post("/publish", {"channel": channel, "event": event, "data": data})
        assert response.status_code == 200, response.text
        return response.json()

    def token(self, sub: str, channels: list[str], ttl: int = 300, publish: list[str] | None = None) -> str:
        body: dict[str, Any] = {"sub": sub, "channels": channels, "ttl": ttl}
        if publish is not None:
            body["publish"] = publish
        response = self.post("/tokens", body)
        assert response.status_code == 200, response.text
        return response.json()["token"]


def subscribed(client: HubClient, *channels: str) -> HubClient:
    """`client`, subscribed to each of `channels` (each ack must be ok)."""
    for channel in channels:
        assert client.call("subscribe", {"channel": channel})["ok"] is True
    return client


def ok(response: requests.Response) -> dict[str, Any]:
    """The JSON body of a 200 answer."""
    assert response.status_code == 200, response.text
    return response.json()


def unique(prefix: str) -> str:
    """A channel name no other test uses, so tests sharing one server cannot see each other's messages."""
    return f"{prefix}.{uuid.uuid4().hex[:10]}"
