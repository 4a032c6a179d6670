"""Token expiry while connected: a connection whose token runs out is warned, then told why and disconnected.

A token is checked at connect, but connections outlive tokens. One background task keeps every connection's expiry
in a heap and, for each:

- `signalboard:token_expiring` {"exp", "seconds_left"} shortly before (NOTICE_SECONDS, or half the time left for
  shorter tokens): the client may answer with the `refresh_token` event {"token": "<new token>"} to carry on;
- `signalboard:token_expired` {"code": "unauthorized", "reason": "token_expired", "message", "exp"} at expiry,
  followed by a server disconnect (the client sees "io server disconnect": get a new token, then reconnect).

`refresh_token` takes a token for the same `sub`; channels the new token no longer grants are unsubscribed and listed
in the ack, so a narrowed token takes effect at once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from hub import Hub
from hub.channels import can_subscribe
from hub.errors import Forbidden, InvalidPayload, NotFound
from hub.tokens import Claims, TokenIssuer
from utils.background import StartTask
from utils.socketio_error_handler import swallow_disconnected_session

log = logging.getLogger(__name__)

EXPIRING_EVENT = "signalboard:token_expiring"
EXPIRED_EVENT = "signalboard:token_expired"
NOTICE_SECONDS = 30.0
_WARN, _EXPIRE = "warn", "expire"


class TokenExpiry:
    """Warns and disconnects connections of one namespace as their tokens run out (one lazily started task)."""

    TASK = "token expiry"

    def __init__(self, namespace: str, server: Callable[[], Any], start_task: StartTask,
                 clock: Callable[[], float] = time.time, refresher: Callable[[str], bool] | None = None) -> None:
        self.namespace = namespace
        self._server = server  # the python-socketio server, looked up when first needed (bound after us)
        self._start_task = start_task  # utils.drain.BackgroundTasks.start: SIGTERM stops the task
        self._clock = clock
        # Asked before a warning (the authorization hook): True means it extended the connection (no warning).
        self._refresher = refresher
        # Guards _heap, _expiry, _started and _stopped; notified when an earlier deadline arrives or on stop().
        self._changed = threading.Condition()
        self._heap: list[tuple[float, int, str, int, str]] = []  # (when, tie-break, sid, exp, action)
        self._expiry: dict[str, int] = {}  # sid -> the exp its entries are for; older entries are stale
        self._order = itertools.count()
        self._started = False
        self._stopped = False

    def track(self, sid: str, exp: int | None) -> None:
        """Schedule the warning and the disconnect for `sid`'s token (replacing any earlier one)."""
        if exp is None:
            self.forget(sid)
            return
        now = self._clock()
        warn_at = warning_time(exp, now)
        warning = (warn_at, next(self._order), sid, exp, _WARN)
        with self._changed:
            self._expiry[sid] = exp
            heapq.heappush(self._heap, warning)
            heapq.heappush(self._heap, (float(exp), next(self._order), sid, exp, _EXPIRE))
            start = not self._started and not self._stopped
            self._started = True
            # The task sleeps until the earliest deadline: only a new earliest one needs it awake (a connect storm
            # with same-length tokens woke it, and made it wait for the lock, once per connection).
            if self._heap[0] is warning:
                self._changed.notify()
        if start:
            self._start_task(self.TASK, self._run, self.stop)

    def stop(self) -> None:
        """End the task (graceful shutdown): nothing more is warned or expired."""
        with self._changed:
            self._stopped = True
            self._changed.notify()

    def forget(self, sid: str) -> None:
        with self._changed:
            self._expiry.pop(sid, None)  # its heap entries are skipped as stale when they come up

    def pending(self) -> int:
        with self._changed:
            return len(self._expiry)

    def _due(self) -> list[tuple[str, int, str]] | None:
        """Wait for the next deadline; return the live entries that are due (None once stopped)."""
        with self._changed:
            while not self._stopped:
                now = self._clock()
                due = []
                while self._heap and self._heap[0][0] <= now:
                    _, _, sid, exp, action = heapq.heappop(self._heap)
                    if self._expiry.get(sid) == exp:
                        if action == _EXPIRE:
                            del self._expiry[sid]
                        due.append((sid, exp, action))
                if due:
                    return due
                if not self._heap:  # stale entries are dropped above, so an empty heap means nothing to do
                    self._changed.wait()
                else:
                    self._changed.wait(self._heap[0][0] - now)
            return None

    def _run(self) -> None:
        while (due := self._due()) is not None:
            for sid, exp, action in due:
                try:
                    (self._expire if action == _EXPIRE else self._warn)(sid, exp)
                # One failing client must not stop the expiry of every other one.
                except Exception:
                    log.exception("token expiry %s failed for %s", action, sid)

    @swallow_disconnected_session
    def _warn(self, sid: str, exp: int) -> None:
        if self._refresher is not None and self._refresher(sid):
            return
        left = max(0, round(exp - self._clock()))
        self._server().emit(EXPIRING_EVENT, {"exp": exp, "seconds_left": left}, to=sid, namespace=self.namespace)

    @swallow_disconnected_session
    def _expire(self, sid: str, exp: int) -> None:
        server = self._server()
        body = {"code": "unauthorized", "reason": "token_expired", "exp": exp,
                "message": "Your token has expired: get a new one and reconnect (or send refresh_token before exp)."}
        server.emit(EXPIRED_EVENT, body, to=sid, namespace=self.namespace)
        server.disconnect(sid, namespace=self.namespace)
        log.debug("disconnected %s: token expired", sid)


def warning_time(exp: float, now: float) -> float:
    """When a token expiring at `exp` is warned about: NOTICE_SECONDS before, or half-way for shorter tokens."""
    return exp - min(NOTICE_SECONDS, max(0.0, exp - now) / 2)


def refreshed_claims(tokens: TokenIssuer, current_sub: str | None, payload: Any) -> Claims:
    """The claims of the token in a `refresh_token` payload; it must name the same user as the connection."""
    if not isinstance(payload, dict):
        raise InvalidPayload("the event payload must be an object like {\"token\": \"...\"}")
    claims = tokens.verify(payload.get("token"))
    if claims.sub != current_sub:
        raise Forbidden("a refreshed token must be for the same sub as the connection")
    return claims


def drop_ungranted(hub: Hub, sid: str, grants: tuple[str, ...]) -> list[str]:
    """Unsubscribe `sid` from every channel `grants` no longer cover; returns them, sorted."""
    dropped = []
    for channel in sorted(hub.presence.channels_of(sid)):
        if can_subscribe(grants, channel):
            continue
        try:
            hub.unsubscribe(sid, channel, reason="not_granted")
        except NotFound:  # it unsubscribed on its own meanwhile
            continue
        dropped.append(channel)
    return dropped
