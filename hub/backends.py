"""The hub's three backends, chosen together once (memory or Redis), with what the app must check and start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hub.fanout import Fanout
from hub.history import HistoryStore
from hub.presence import Presence


@dataclass(frozen=True)
class Backends:
    history: HistoryStore
    presence: Presence
    fanout: Fanout
    readiness_name: str  # the /readyz check that says whether these backends can take traffic
    readiness: Callable[[], str | None]
    on_request: Callable[[], None] | None = None  # run before each HTTP request (Redis: start the health monitor)
