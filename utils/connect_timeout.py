"""Engine.IO sessions that join no Socket.IO namespace within CONNECT_TIMEOUT_SECONDS are closed.

A session that answers pings but never sends a namespace CONNECT (`40`) holds a websocket slot or a polling thread
for nothing, forever: 200 of them filled a server. The Node reference closes them after `connectTimeout`; here one
lazily started thread checks the sessions that are still waiting, every quarter of the timeout (at most a second),
and closes the late ones with the disconnect reason `connect timeout` (counted in /metrics as `connect_timeout`).

A session whose CONNECT did arrive (the inbound gate saw it, transport/inbound.py) but is not answered yet is the
server's delay, not an idle client: with 10,000 clients connecting at once the last CONNECTs wait longer than the
timeout for a handler, and closing them (2,901 of 10,000 in one storm) only sends them back to connect again. Such
a session gets ANSWER_WAITS timeouts in all; one whose CONNECT was refused and that then idles is closed at that
bound.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from utils.background import StartTask

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = "connect timeout"  # Engine.IO disconnect reason; the metrics label is connect_timeout
ANSWER_WAITS = 3  # timeouts a session that sent its CONNECT may wait for the answer, in all


def sent_a_connect(socket: Any) -> bool:
    """Whether the client asked to join a namespace (its inbound gate, set by the transport adopter, saw `0`)."""
    gate = getattr(socket, "inbound", None)
    return gate is not None and bool(gate.asked)


def joined_a_namespace(socketio_server: Any, eio_sid: str) -> bool:
    """Whether this Engine.IO session is in (or being admitted to) any Socket.IO namespace."""
    manager = socketio_server.manager
    return any(manager.sid_from_eio_sid(eio_sid, namespace) is not None for namespace in list(manager.get_namespaces()))


class ConnectTimeout:
    """Watches new sessions until they join a namespace; register on_connect/on_disconnect as session observers."""

    def __init__(self, socketio_server: Any, seconds: float, start_task: StartTask) -> None:
        self.server = socketio_server
        self.start_task = start_task
        self.seconds = seconds
        self.interval = min(1.0, seconds / 4)
        self._lock = threading.Lock()  # guards _waiting, _answering and _watcher
        self._waiting: dict[str, float] = {}  # eio sid -> when it must have joined a namespace
        self._answering: set[str] = set()  # sids given more time because their CONNECT arrived
        self._watcher: Any = None
        self._stop = threading.Event()

    def on_connect(self, sid: str, environ: dict) -> None:
        with self._lock:
            self._waiting[sid] = time.monotonic() + self.seconds
            if self._watcher is None:
                self._watcher = self.start_task("connect timeout", self._watch, self.stop)

    def on_disconnect(self, sid: str, reason: Any = None) -> None:
        with self._lock:
            self._waiting.pop(sid, None)
            self._answering.discard(sid)

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                due = [sid for sid, deadline in self._waiting.items() if deadline <= now]
            for sid in due:
                joined = joined_a_namespace(self.server, sid)
                if not joined and self._give_time_to_answer(sid, now):
                    continue
                with self._lock:
                    self._waiting.pop(sid, None)
                    self._answering.discard(sid)
                if not joined:
                    self._close(sid)

    def _give_time_to_answer(self, sid: str, now: float) -> bool:
        """Once per session: if its CONNECT arrived, watch it until ANSWER_WAITS timeouts in all."""
        socket = self.server.eio.sockets.get(sid)
        with self._lock:
            if sid in self._answering or sid not in self._waiting or socket is None or not sent_a_connect(socket):
                return False
            self._answering.add(sid)
            self._waiting[sid] = now + (ANSWER_WAITS - 1) * self.seconds
            return True

    def _close(self, sid: str) -> None:
        eio = self.server.eio
        socket = eio.sockets.get(sid)
        if socket is None or socket.closed:
            return
        log.debug("closing Engine.IO session %s: no namespace joined in %ss", sid, self.seconds)
        socket.close(wait=False, reason=CONNECT_TIMEOUT)  # with a CLOSE packet: the client learns why it ended
        eio.sockets.pop(sid, None)
