"""utils/connect_timeout.py's policy: an idle session is closed at the timeout, one whose CONNECT arrived gets
ANSWER_WAITS timeouts in all, a joined one is let go. A stand-in server (sessions and namespace membership only);
the real server's closes are tests/reliability/test_attacks.py."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from transport.inbound import InboundGate, InboundPolicy
from utils.connect_timeout import ANSWER_WAITS, ConnectTimeout

TIMEOUT = 0.5


class Session:
    def __init__(self, sent_connect: bool) -> None:
        self.inbound = InboundGate(InboundPolicy(rate=0, burst=1, flood_refusals=1))
        if sent_connect:
            assert self.inbound.check("0") == ("pass", None)
        self.closed_at: float | None = None

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def close(self, wait: bool, reason: Any) -> None:
        self.closed_at = time.monotonic()


def test_only_sessions_that_sent_no_connect_are_closed_at_the_timeout():
    sessions = {"idle": Session(False), "connecting": Session(True), "joined": Session(True)}
    manager = SimpleNamespace(get_namespaces=lambda: ["/"],
                              sid_from_eio_sid=lambda eio_sid, ns: "x" if eio_sid == "joined" else None)
    server = SimpleNamespace(eio=SimpleNamespace(sockets=dict(sessions)), manager=manager)
    timeout = ConnectTimeout(server, TIMEOUT, lambda name, target, stop: threading.Thread(target=target,
                                                                                          daemon=True).start())
    opened = time.monotonic()
    for sid in sessions:
        timeout.on_connect(sid, {})
    try:
        deadline = opened + 10
        while not sessions["connecting"].closed and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        timeout.stop()
    idle, connecting = sessions["idle"].closed_at, sessions["connecting"].closed_at
    assert idle is not None and idle - opened >= TIMEOUT
    assert connecting is not None and connecting - opened >= ANSWER_WAITS * TIMEOUT
    assert not sessions["joined"].closed
    assert timeout.waiting() == 0  # nothing left watched: the joined one was let go at its deadline
