"""The authorization hook (AUTH_HOOK_URL): the backend decides who a token-less connection is, whether a
connection may subscribe beyond its grants, and may extend an expiring identity, over signed POSTs."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hub.errors import HubError, InvalidChannel, InvalidPayload, Unauthorized, Unavailable
from hub.tokens import check_patterns, check_sub
from utils.outbound import PostFailed, post, signed_json

log = logging.getLogger(__name__)

# The connect request's headers the backend may see (its own session cookie, mostly); nothing else is forwarded.
FORWARDED_HEADERS = ("Cookie", "Authorization", "Origin", "User-Agent", "X-Forwarded-For")
ANSWER_CAP = 64 * 1024
MESSAGE_CAP = 200
CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class HookIdentity:
    """The backend's answer to a connect or refresh: the same claims a token carries."""

    sub: str
    channels: tuple[str, ...]
    publish: tuple[str, ...]
    exp: int | None


def _message(body: bytes, default: str) -> str:
    """The backend's own reason for a refusal: {"message"} or {"error": {"message"}}, else its text."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        text = data.get("message") or (error.get("message") if isinstance(error, dict) else None)
        if isinstance(text, str) and text.strip():
            return text.strip()[:MESSAGE_CAP]
    text = body.decode("utf-8", "replace").strip()
    return text[:MESSAGE_CAP] if text and data is None else default


def _identity(body: bytes, *, now: float) -> HookIdentity:
    """Parse a 200 answer; raises InvalidPayload/InvalidChannel if it is not a usable identity."""
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidPayload("the answer is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidPayload("the answer is not an object")
    exp = data.get("exp")
    if exp is not None and (type(exp) is not int or exp <= now):
        raise InvalidPayload("exp must be a whole number of seconds in the future")
    return HookIdentity(check_sub(data.get("sub")), check_patterns("channels", data.get("channels", [])),
                        check_patterns("publish", data.get("publish", [])), exp)


class AuthHook:
    def __init__(self, url: str, secret: str, *, timeout: float, cache_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._clock = clock
        # Guards _cache: (sub, channel) -> (allowed, monotonic expiry), oldest first.
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str | None, str], tuple[bool, float]] = OrderedDict()

    def _ask(self, request: dict[str, Any]) -> tuple[int, bytes]:
        body, headers = signed_json(self.secret, request)
        try:
            answer = post(self.url, body, headers, timeout=self.timeout, max_answer_bytes=ANSWER_CAP)
        except PostFailed as exc:
            log.warning("authorization hook %s failed: %s", request["type"], exc)
            raise Unavailable("the authorization backend is unavailable, retry shortly") from None
        return answer.status, answer.body

    def connect(self, headers: Mapping[str, str], auth: Mapping[str, Any] | None) -> HookIdentity:
        """Who a connection without a token is; raises Unauthorized (refused by the backend) or Unavailable."""
        forwarded = {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
        status, body = self._ask({"type": "connect", "headers": forwarded, "auth": dict(auth or {})})
        if status in (401, 403):
            raise Unauthorized(_message(body, "refused by the authorization backend"), reason="hook_refused")
        if status != 200:
            log.warning("authorization hook connect answered HTTP %d", status)
            raise Unavailable("the authorization backend is unavailable, retry shortly")
        try:
            return _identity(body, now=time.time())
        except (InvalidPayload, InvalidChannel) as exc:
            log.warning("authorization hook connect gave an unusable identity: %s", exc.message)
            raise Unavailable("the authorization backend gave an unusable answer") from None

    def may_subscribe(self, sub: str | None, channel: str) -> bool:
        """The backend's answer for (sub, channel), cached for AUTH_HOOK_CACHE_SECONDS; raises Unavailable."""
        key = (sub, channel)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > now:
                return cached[0]
        status, _ = self._ask({"type": "subscribe", "sub": sub, "channel": channel})
        if status >= 500:
            raise Unavailable("the authorization backend is unavailable, retry shortly")
        allowed = status == 200
        if self.cache_seconds > 0:
            with self._lock:
                self._cache[key] = (allowed, now + self.cache_seconds)
                self._cache.move_to_end(key)
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return allowed

    def refresh(self, sub: str) -> HookIdentity | None:
        """A new identity for `sub` before its expiry, or None (then the client is warned as usual)."""
        try:
            status, body = self._ask({"type": "refresh", "sub": sub})
            if status != 200:
                return None
            identity = _identity(body, now=time.time())
        except HubError as exc:
            log.debug("authorization hook refresh for %s gave nothing usable: %s", sub, exc.message)
            return None
        return identity if identity.sub == sub else None
