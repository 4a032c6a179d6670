"""Admission control: Socket.IO sessions may never take the threads plain HTTP needs.

Under gunicorn gthread every websocket holds a worker thread for its whole life and every idle long-poll holds one
until its next ping, so each open session costs about one thread. Sessions beyond `threads - reserve` are refused
quickly with 503 and Retry-After while a thread is still free to say so; the reserve keeps /livez, the publish API
and the dashboard answering.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from utils.metrics import PREFIX
from utils.runtime_stats import connected_clients

ADMISSION_REFUSALS = Counter(f"{PREFIX}_admission_refusals", "Socket.IO connections refused before taking a thread",
                             ["reason"])
for _reason in ("capacity", "draining"):
    ADMISSION_REFUSALS.labels(_reason)


@dataclass(frozen=True)
class ThreadBudget:
    threads: int
    reserve: int

    @property
    def session_capacity(self) -> int:
        return self.threads - self.reserve

    def report(self, engineio_server: Any) -> dict[str, int]:
        clients = connected_clients(engineio_server)
        used = clients["websocket"] + clients["polling"]
        return {"threads": self.threads, "reserved": self.reserve, "capacity": self.session_capacity,
                "sessions": used, "free": max(0, self.session_capacity - used)}


class Admission:
    """Decides whether a new Engine.IO session may start; answers the refusal itself when not."""

    def __init__(self, budget: ThreadBudget, engineio_server: Any, draining: Callable[[], bool]) -> None:
        self.budget = budget
        self.engineio_server = engineio_server
        self.draining = draining

    def refusal_reason(self) -> str | None:
        if self.draining():
            return "draining"
        if self.budget.report(self.engineio_server)["free"] <= 0:
            return "capacity"
        return None

    def capacity_check(self) -> str | None:
        """Readiness check: a load balancer should send new clients elsewhere while we are full."""
        report = self.budget.report(self.engineio_server)
        if report["free"] <= 0:
            return f"no free Socket.IO capacity ({report['sessions']}/{report['capacity']} sessions)"
        return None

    @staticmethod
    def refuse(reason: str, start_response: Callable) -> Iterable[bytes]:
        ADMISSION_REFUSALS.labels(reason).inc()
        message = "Server is shutting down" if reason == "draining" else "Server at capacity"
        body = json.dumps({"code": 5, "message": message, "reason": reason}).encode()
        # Jittered so refused clients do not all come back in the same second.
        retry_after = str(random.randint(1, 5))
        start_response("503 SERVICE UNAVAILABLE", [("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(body))), ("Retry-After", retry_after)])
        return [body]
