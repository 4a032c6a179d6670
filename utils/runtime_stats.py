"""Point-in-time figures about this process, read when asked (health bodies, metrics, dashboard), never kept."""

from __future__ import annotations

import threading
import time
from typing import Any

from transport.handler_threads import IDLE_NAME

STARTED_AT = time.time()

# gunicorn's gthread pool names its threads after the executor, and the shared transport's idle handler threads
# (transport/handler_threads.py) wait for their next call; everything else (per-connection Engine.IO writers,
# simple-websocket readers, ping timers, our own tasks, handlers at work) is what can leak.
_POOL_THREAD_PREFIXES = ("ThreadPoolExecutor", IDLE_NAME)


def connected_clients(engineio_server: Any, sse: int = 0) -> dict[str, int]:
    """Open Engine.IO sessions by transport, and the `sse` streams (GET /api/v1/stream) the caller counted.

    Read from the counts integration/session_counts.py keeps in `sockets` (admission asks on every handshake);
    walked when `sockets` is a plain dict (no integration installed, or after python-engineio's disconnect-all)."""
    counted = getattr(engineio_server.sockets, "by_transport", None)
    if counted is not None:
        return counted() | {"sse": sse}
    counts = {"websocket": 0, "polling": 0, "sse": sse}
    for socket in list(engineio_server.sockets.values()):
        if not socket.closed:
            counts["websocket" if socket.upgraded else "polling"] += 1
    return counts


def sse_count(extensions: Any) -> int:
    """Open SSE streams of the app whose `extensions` these are (0 before the realtime blueprint set them up)."""
    streams = extensions.get("sse_streams")
    return streams.count() if streams is not None else 0


def thread_counts() -> dict[str, int]:
    pool = sum(1 for t in threading.enumerate() if t.name.startswith(_POOL_THREAD_PREFIXES))
    total = threading.active_count()
    return {"total": total, "pool": pool, "other": total - pool}


def uptime_seconds() -> float:
    return round(time.time() - STARTED_AT, 1)
