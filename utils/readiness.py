"""What /readyz asks: named checks that each say why the process should not take traffic, plus a drain flag."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# A check returns None when all is well, or a short reason a load balancer operator can act on.
Check = Callable[[], "str | None"]


class Readiness:
    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self._draining = threading.Event()

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def start_draining(self) -> None:
        self._draining.set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def failures(self) -> dict[str, str]:
        """Reasons by check name; empty when ready."""
        reasons: dict[str, str] = {}
        if self.draining:
            reasons["drain"] = "shutting down"
        for name, check in self._checks.items():
            try:
                reason = check()
            except Exception as exc:  # a broken check must mark us unready, not break /readyz
                log.warning("readiness check %s failed: %s", name, exc)
                reason = f"check failed: {type(exc).__name__}"
            if reason:
                reasons[name] = reason
        return reasons
