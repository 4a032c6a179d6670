"""Engine.IO sessions that join no Socket.IO namespace within CONNECT_TIMEOUT_SECONDS are closed.

A session that answers pings but never sends a namespace CONNECT (`40`) holds a websocket slot or a polling thread
for nothing, forever: 200 of them filled a server. The Node reference closes them after `connectTimeout`; here one
lazily started thread checks the sessions that are still waiting, every quarter of the timeout (at most a second),
and closes the late ones with the disconnect reason `connect timeout` (counted in /metrics as `connect_timeout`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from utils.background import StartTask

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = "connect timeout"  # Engine.IO disconnect reason; the metrics label is connect_timeout


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
        self._lock = threading.Lock()  # guards _waiting and _watcher
        self._waiting: dict[str, float] = {}  # eio sid -> when it must have joined a namespace
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
                with self._lock:
                    self._waiting.pop(sid, None)
                if not joined_a_namespace(self.server, sid):
                    self._close(sid)

    def _close(self, sid: str) -> None:
        eio = self.server.eio
        socket = eio.sockets.get(sid)
        if socket is None or socket.closed:
            return
        log.debug("closing Engine.IO session %s: no namespace joined in %ss", sid, self.seconds)
        socket.close(wait=False, reason=CONNECT_TIMEOUT)  # with a CLOSE packet: the client learns why it ended
        eio.sockets.pop(sid, None)
