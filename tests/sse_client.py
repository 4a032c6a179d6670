"""A real SSE client for tests: requests streaming the response, sseclient-py parsing it, on a thread of its own."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
import sseclient
import urllib3


@dataclass(frozen=True)
class SseEvent:
    event: str
    id: str | None
    data: Any
    retry: int | None


class SseStream:
    """GET /api/v1/stream with `params` and `headers`; events collected as they arrive, until the server ends it."""

    def __init__(self, url: str, params: Any = None, headers: dict[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        self.response = requests.get(url + "/api/v1/stream", params=params, headers=headers or {}, stream=True,
                                     timeout=timeout)
        self.events: list[SseEvent] = []
        self.ended = threading.Event()
        self._lock = threading.Lock()
        if self.response.status_code == 200:
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        else:
            self.ended.set()

    def _read(self) -> None:
        try:
            # read1: what has arrived, as it arrives (iterating the response would wait for 128-byte chunks).
            source = iter(lambda: self.response.raw.read1(65536), b"")
            for event in sseclient.SSEClient(source).events():
                with self._lock:
                    self.events.append(SseEvent(event.event, event.id, json.loads(event.data),
                                               int(event.retry) if event.retry else None))
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError,
                ValueError, AttributeError):
            pass  # the connection was closed (by us or the server)
        finally:
            self.ended.set()

    def of(self, event: str | None = None) -> list[SseEvent]:
        with self._lock:
            return [e for e in self.events if event is None or e.event == event]

    def messages(self, channel: str) -> list[SseEvent]:
        """Channel messages (not signalboard:* events) of `channel`, in arrival order."""
        return [e for e in self.of() if not e.event.startswith("signalboard:")
                and isinstance(e.data, dict) and e.data.get("channel") == channel]

    def offsets(self, channel: str) -> list[int]:
        return [e.data["offset"] for e in self.messages(channel)]

    def wait_for(self, predicate: Any, timeout: float = 10.0, what: str = "events") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; got {self.of()}")

    def wait_event(self, event: str, timeout: float = 10.0) -> SseEvent:
        self.wait_for(lambda: self.of(event), timeout, event)
        return self.of(event)[0]

    def wait_offsets(self, channel: str, count: int, timeout: float = 10.0) -> list[int]:
        self.wait_for(lambda: len(self.offsets(channel)) >= count, timeout, f"{count} messages on {channel}")
        return self.offsets(channel)

    def last_id(self) -> str | None:
        ids = [e.id for e in self.of() if e.id]
        return ids[-1] if ids else None

    def close(self) -> None:
        """Drop the connection as a client going away does (the reader thread is woken by the shutdown)."""
        if not self.ended.is_set():
            try:
                self.response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)  # http.client's socket (test only)
            except (AttributeError, OSError):
                pass
        assert self.ended.wait(10), "the reader did not stop"
        self.response.close()
