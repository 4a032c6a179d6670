"""A bound on what waits to be sent to one client: one that stops reading is dropped as a slow consumer.

python-engineio keeps each session's outgoing packets in an unbounded queue.Queue, and its threaded websocket
writer blocks in send() when the client's TCP window is full, so a client that stops reading grows the server's
memory at the publish rate until its ping timeout. Both transports here bound it by bytes: a backlog may pass
WEBSOCKET_SEND_BUFFER for SLOW_CONSUMER_GRACE seconds (a burst the client then catches up on), or up to HARD_LIMIT
times the bound at once; past either, the session ends with the disconnect reason `slow consumer`, counted in
/metrics and logged once at WARNING. integration/bounded_sockets.py applies the rule to the Engine.IO queue
(polling, and the threaded websocket's writer); the shared transport's WebSocketConnection applies the same `Backlog`
rule to its frame buffer.
"""

from __future__ import annotations

import time
from typing import Any

SLOW_CONSUMER = "slow consumer"  # Engine.IO disconnect reason; the metrics label is slow_consumer
SLOW_CONSUMER_GRACE = 5.0  # seconds a backlog may stay over its bound
HARD_LIMIT = 4  # a backlog over this many times its bound ends the session at once


class Backlog:
    """The slow-consumer rule for one client's backlog; the caller serializes calls (it holds its own lock)."""

    __slots__ = ("limit", "over_since")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.over_since: float | None = None

    def too_slow(self, size: int) -> bool:
        """`size` bytes are waiting now: True when the client has been over the bound too long, or is far over."""
        if size <= self.limit:
            self.over_since = None
            return False
        now = time.monotonic()
        if self.over_since is None:
            self.over_since = now
        return size > HARD_LIMIT * self.limit or now - self.over_since > SLOW_CONSUMER_GRACE

    def drained_to(self, size: int) -> None:
        """Some of the backlog was sent: back under the bound, the grace clock starts afresh next time."""
        if size <= self.limit:
            self.over_since = None


def packet_size(item: Any) -> int:
    data = getattr(item, "data", None)
    return len(data) + 1 if isinstance(data, (str, bytes)) else 1
