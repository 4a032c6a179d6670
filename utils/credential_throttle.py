"""Wrong API keys and dashboard passwords counted together per client address, so neither door is a free guess.

When DASHBOARD_PASSWORD is empty the API keys are the dashboard password: one count for both means `/api/v1` is
not a way around the login throttle. The address is the client's (utils.client_address, TRUSTED_PROXIES), so
operators behind one proxy are not locked out by one guesser.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, request

from hub.ratelimit import FailureThrottle
from utils.client_address import client_address

log = logging.getLogger(__name__)

EXTENSION_KEY = "credential_throttle"
WINDOW_SECONDS = 60.0


def init_credential_throttle(app: Flask) -> None:
    limit = app.config["AUTH_FAILURES_PER_MINUTE"]
    app.extensions[EXTENSION_KEY] = FailureThrottle(limit, WINDOW_SECONDS) if limit > 0 else None


def request_address() -> str:
    """The current request's client address, as TRUSTED_PROXIES allows it to be known."""
    return client_address(request.environ, current_app.config["TRUSTED_PROXIES"])


def _throttle() -> FailureThrottle | None:
    return current_app.extensions[EXTENSION_KEY]


def credential_wait(what: str) -> float:
    """Seconds the current client must wait before `what` (an API key, a password) is even compared; 0: go on."""
    throttle = _throttle()
    if throttle is None:
        return 0.0
    address = request_address()
    wait = throttle.wait(address)
    if wait and throttle.should_log(address):
        log.warning("%s refused for %s: %d wrong credentials within %d s (quiet about this address for %d s)",
                    what, address, throttle.failures, WINDOW_SECONDS, WINDOW_SECONDS)
    return wait


def credential_failed(what: str) -> None:
    """Count a wrong `what` against the current client; one log line per address per minute, however many."""
    address = request_address()
    throttle = _throttle()
    if throttle is None:
        log.info("wrong %s from %s", what, address)
        return
    throttle.failed(address)
    if throttle.should_log(address):
        log.warning("wrong %s from %s (quiet about this address for %d s; %d wrong credentials a minute are allowed)",
                    what, address, WINDOW_SECONDS, throttle.failures)
