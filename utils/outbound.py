"""Signed POSTs to a backend with a hard total deadline, no redirects and a capped read: a hostile or broken
receiver can cost one attempt's deadline and a few kilobytes, never a stuck thread or unbounded memory."""

from __future__ import annotations

import hashlib
import heapq
import hmac
import http.client
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError
from urllib3.util import parse_url

from utils.background import StartTask

TIMESTAMP_HEADER = "X-Signalboard-Timestamp"
SIGNATURE_HEADER = "X-Signalboard-Signature"
INSTANCE_HEADER = "X-Signalboard-Instance"
USER_AGENT = "Signalboard-Webhooks/1"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`, the value of X-Signalboard-Signature."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_json(secret: str, payload: Any) -> tuple[bytes, dict[str, str]]:
    """The compact JSON body of `payload` and the headers that sign it with the current time."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = str(int(time.time()))
    return body, {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def display_url(url: str) -> str:
    """A URL as it may appear in logs and metric labels: no credentials, no query (either may hold a secret)."""
    parts = parse_url(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.host}{port}{parts.path or '/'}"


class PostFailed(Exception):
    """The POST got no answer: `reason` is `timeout`, `refused` or `error`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most the cap the caller gave
    truncated: bool


class _Watchdog:
    """One thread that shuts the socket of every POST still running at its deadline: socket timeouts bound each
    read, not the whole exchange, so a receiver sending a byte every few seconds would otherwise hold on forever."""

    TASK = "outbound deadlines"

    def __init__(self) -> None:
        self._cond = threading.Condition()  # guards _heap, _fired, _start, _stopping and the thread's start
        self._heap: list[tuple[float, int, HTTPConnection]] = []
        self._fired: set[int] = set()
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: Any = None
        self._start: StartTask | None = None
        self._stopping = False

    def bind(self, start_task: StartTask) -> None:
        """Start the thread through the app's drain tasks (utils.drain.BackgroundTasks.start), so SIGTERM stops it;
        one watchdog per process, so the app built last (the only one under gunicorn) is the one it answers to."""
        with self._cond:
            self._start = start_task

    def stop(self) -> None:
        """End the thread (graceful shutdown, after the webhook deliverers); a later POST starts a new one."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def arm(self, conn: HTTPConnection, deadline: float) -> int:
        with self._cond:
            if self._thread is None:
                if self._start is not None:
                    self._thread = self._start(self.TASK, self._run, self.stop)
                else:  # no app bound it (a tool using post() on its own)
                    self._thread = threading.Thread(target=self._run, name="outbound-deadlines", daemon=True)
                    self._thread.start()
            ticket = next(self._ids)
            self._live.add(ticket)
            heapq.heappush(self._heap, (deadline, ticket, conn))
            self._cond.notify()
            return ticket

    def disarm(self, ticket: int) -> bool:
        """Forget a POST; True if its deadline had fired."""
        with self._cond:
            self._live.discard(ticket)
            if ticket in self._fired:
                self._fired.discard(ticket)
                return True
            return False

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    self._stopping, self._thread = False, None
                    return
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, ticket, conn = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                self._fired.add(ticket)
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by its owner


_WATCHDOG = _Watchdog()


def bind_outbound_tasks(start_task: StartTask) -> None:
    """Start the deadline watchdog of outbound POSTs (webhooks, the authorization hook) as a drain task."""
    _WATCHDOG.bind(start_task)


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, max_answer_bytes: int) -> Answer:
    """POST `body` to `url` and read at most `max_answer_bytes` of the answer, all within `timeout` seconds.

    Redirects are answers like any other (never followed). Raises PostFailed when there is no answer.
    """
    parts = parse_url(url)
    connection_class = HTTPSConnection if parts.scheme == "https" else HTTPConnection
    conn = connection_class(parts.host or "", parts.port, timeout=timeout)
    ticket = _WATCHDOG.arm(conn, time.monotonic() + timeout)
    try:
        conn.request("POST", parts.request_uri, body=body, headers={**headers, "Connection": "close"},
                     preload_content=False)
        response = conn.getresponse()
        data = b""
        while len(data) <= max_answer_bytes:
            chunk = response.read(min(65536, max_answer_bytes + 1 - len(data)))
            if not chunk:
                break
            data += chunk
        return Answer(response.status, data[:max_answer_bytes], len(data) > max_answer_bytes)
    except (OSError, HTTPError, http.client.HTTPException, ValueError) as exc:
        if _WATCHDOG.disarm(ticket) or isinstance(exc, TimeoutError):
            raise PostFailed("timeout", f"no complete answer within {timeout:g}s") from None
        if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
            raise PostFailed("refused", "connection refused") from None
        raise PostFailed("error", f"{type(exc).__name__}: {exc}"[:200]) from None
    finally:
        _WATCHDOG.disarm(ticket)
        conn.close()
