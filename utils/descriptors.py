"""Descriptor limits: every websocket holds one descriptor, so the process's RLIMIT_NOFILE decides how many it takes.

At start the soft limit is raised to the hard one (the soft default, often 1024, is a compatibility value, not a
budget), and unless MAX_WEBSOCKET_CLIENTS is set the websocket cap is the limit minus a headroom kept for everything
else: HTTP connections (polling clients, the API, /livez), Redis connections, log files, the loop's wake-up pair.
A descriptor shortage that happens anyway (MAX_WEBSOCKET_CLIENTS set above the limit, a flood of idle HTTP
connections) is answered 503 + Retry-After where it meets a new session (`is_exhausted`; the shared transport's
take-over, gunicorn in integration/gunicorn_descriptors.py), never an EMFILE traceback.
"""

from __future__ import annotations

import errno
import logging
import resource
import time

log = logging.getLogger(__name__)

MIN_HEADROOM = 64  # descriptors kept for anything that is not a websocket, however low the limit
HEADROOM_SHARE = 10  # ... or 1 in HEADROOM_SHARE of the limit when that is more (2,000 of 20,000)
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


def raise_soft_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (when it can) and return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:  # a container may forbid it: keep the soft limit, say so
            log.warning("could not raise the descriptor limit from %d to %d: %s", soft, wanted, exc)
    return soft


def headroom(limit: int) -> int:
    """Descriptors kept free of websockets out of `limit`."""
    return min(limit - 1, max(MIN_HEADROOM, limit // HEADROOM_SHARE))


def websocket_cap(configured: int | None) -> int:
    """MAX_WEBSOCKET_CLIENTS as set, or derived from the descriptor limit; raises the soft limit and logs the choice."""
    limit = raise_soft_limit()
    kept = headroom(limit)
    if configured is None:
        cap = limit - kept
        log.info("descriptor limit %d: up to %d websockets (MAX_WEBSOCKET_CLIENTS derived, %d descriptors kept "
                 "for HTTP, Redis and logs)", limit, cap, kept)
    else:
        cap = configured
        log.info("descriptor limit %d: up to %d websockets (MAX_WEBSOCKET_CLIENTS set)%s", limit, cap,
                 "; above what the limit leaves, so some sessions may be refused 503 for lack of descriptors"
                 if cap > limit - kept else "")
    return cap


def is_exhausted(exc: BaseException) -> bool:
    """The process (EMFILE) or the system (ENFILE) is out of descriptors."""
    return isinstance(exc, OSError) and exc.errno in EXHAUSTION_ERRNOS


_WARN_EVERY = 10.0  # seconds between two warnings: a flood of refusals is one line, not one per connection
_last_warning = 0.0


def warn_exhausted(where: str) -> None:
    """One WARNING (at most every few seconds) that a new connection was refused for lack of descriptors."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= _WARN_EVERY:
        _last_warning = now
        log.warning("out of file descriptors (limit %d): %s refused with 503 (raise `ulimit -n` or lower "
                    "MAX_WEBSOCKET_CLIENTS)", resource.getrlimit(resource.RLIMIT_NOFILE)[0], where)
