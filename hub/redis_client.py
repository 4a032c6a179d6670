"""What the Redis-backed hub parts share: one way to connect, the key names, and outage errors mapped to 503."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from config import MAX_GUNICORN_THREADS
from hub.errors import Unavailable
from utils.redis_urls import is_sentinel_url, parse_sentinel_url

log = logging.getLogger(__name__)

# Seconds a command may take before the caller gets a 503: long enough for a busy Redis, short enough
# that a publisher never hangs on a dead one.
COMMAND_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0
# Errors that mean "Redis is not there right now" (down, restarting, loading, failed over to a replica),
# as opposed to a bug such as a script error, which must stay loud.
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)
# redis-py's pool refuses a 101st connection in use at once (MaxConnectionsError, a ConnectionError: a 503), which
# a 2000-client reconnect storm reached. A thread holds at most one connection of a pool at a time, so a bound above
# the threads a worker can run never refuses one; a pool keeps only the connections that were once in use together.
POOL_MAX_CONNECTIONS = MAX_GUNICORN_THREADS + 100  # request threads, plus background tasks


def client_for(url: str, **options: Any) -> redis.Redis:
    """A client for `url` with these redis-py options; for a sentinel URL, one that follows the master.

    redis-py's master_for asks the Sentinels for the master's address on every new connection, so a client
    whose connection broke in a failover reconnects to the promoted replica by itself (and a demoted master's
    READONLY answer is turned into a ConnectionError, one of OUTAGE_ERRORS).
    """
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    auth = {"username": target.username, "password": target.password}
    # The Sentinels themselves: the same short timeouts, so a dead Sentinel costs one connect timeout.
    sentinel_options = {key: value for key, value in options.items() if key.startswith("socket_")}
    sentinel = redis.sentinel.Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)
    return sentinel.master_for(target.service, db=target.db, **auth, **options)


def text(value: bytes | str) -> str:
    """A reply of a `connect()` client as the str it is: redis-py types replies `bytes | str` whatever the client."""
    return value if isinstance(value, str) else value.decode()


def connect(url: str, *, timeout: float = COMMAND_TIMEOUT) -> redis.Redis:
    """A client that fails fast instead of retrying: appends are not idempotent, so the caller decides."""
    return client_for(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=10,
        max_connections=POOL_MAX_CONNECTIONS,
    )


# One warning per this many seconds during an outage, with the count of refusals in between, so a busy
# publisher does not flood the log with one line per refused request.
_WARN_EVERY = 5.0
# Guards the two counters below (request threads refuse concurrently).
_warn_lock = threading.Lock()
_last_warning = 0.0
_suppressed = 0


def warn_outage(what: str, exc: object) -> None:
    """One warning line per few seconds about Redis refusing `what`, with the count of refusals in between."""
    global _last_warning, _suppressed
    with _warn_lock:
        now = time.monotonic()
        if now - _last_warning < _WARN_EVERY:
            _suppressed += 1
            return
        skipped, _suppressed, _last_warning = _suppressed, 0, now
    log.warning("redis unavailable during %s: %s (%d more refusals since the last warning)", what, exc, skipped)


@contextmanager
def unavailable_on_outage(what: str) -> Iterator[None]:
    """Turn a Redis outage into the hub's Unavailable (HTTP 503 / error ack `unavailable`)."""
    try:
        yield
    except OUTAGE_ERRORS as exc:
        warn_outage(what, exc)
        raise Unavailable("message store unavailable, retry shortly", retry_after=1.0) from None


@dataclass(frozen=True)
class RedisKeys:
    """Every key Signalboard uses, under one prefix so several deployments can share a Redis."""

    prefix: str = "signalboard"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def offsets(self) -> str:
        return f"{self.prefix}:offsets"

    @property
    def channels(self) -> str:
        return f"{self.prefix}:channels"

    def stream(self, channel: str) -> str:
        return f"{self.prefix}:stream:{channel}"

    def idempotency(self, channel: str, key: str) -> str:
        """The record of one idempotency key on one channel; '/' never occurs in a channel name, so it separates."""
        return f"{self.prefix}:idempotency:{channel}/{key}"

    @property
    def socketio_channel(self) -> str:
        """The pub/sub channel of python-socketio's Redis manager, shared by every instance and publisher."""
        return f"{self.prefix}:socketio"

    def revoked(self, key: str) -> str:
        """One revoked id (hub.revocations), expiring with it."""
        return f"{self.prefix}:revoked:{key}"

    @property
    def presence(self) -> str:
        """Key prefix of the presence structures (see hub.redis_presence)."""
        return f"{self.prefix}:presence"
