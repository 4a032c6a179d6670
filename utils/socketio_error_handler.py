"""Turns every disconnected-session race into a quiet, counted, correct response.

python-engineio raises `KeyError('Session is disconnected')` / `KeyError('Session not found')` when a request or a
handler names a client that has just gone. Most of those are raised before any Socket.IO event handler runs, so an
error handler alone never sees them. Four layers cover every place they surface:

1. `SocketGuard` (utils/socket_guard.py), WSGI middleware in front of the Socket.IO endpoint: a polling request for
   a closed or unknown session gets HTTP 400 with the Engine.IO error body the reference server sends, never a 500
   or a traceback (it uses `count_disconnect_race` below).
2. `register_socketio_error_handlers`: the default Flask-SocketIO error handler; a race is logged at DEBUG, any other
   error once at ERROR, and the client's ack gets a structured error, never the exception text.
3. `swallow_disconnected_session`: a decorator for event handlers and background tasks.
4. `DisconnectRaceLogFilter` and `install_thread_excepthook`: the libraries' own error logs and any thread that would
   die on a race are brought to DEBUG; any other thread death is logged through logging, never printed raw.
"""

from __future__ import annotations

import errno
import functools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from engineio.exceptions import SocketIsClosedError
from flask import request

from integration.library_texts import CANNOT_SEND_TO_SID, ENGINEIO_WRITER_THREAD_SUFFIX, GONE_SESSION_MESSAGES
from utils.metrics import DISCONNECT_RACES

log = logging.getLogger(__name__)

_SOCKET_GONE = frozenset({errno.EBADF, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN})
DISCONNECTED_SESSION_MESSAGES = GONE_SESSION_MESSAGES  # python-engineio's texts, checked by integration/pins.py

F = TypeVar("F", bound=Callable[..., Any])


def is_disconnected_session_error(exc: BaseException | None) -> bool:
    """True for the errors python-engineio raises when a session has gone; nothing else."""
    if isinstance(exc, SocketIsClosedError):
        return True
    return isinstance(exc, KeyError) and len(exc.args) == 1 and exc.args[0] in DISCONNECTED_SESSION_MESSAGES


def count_disconnect_race(kind: str, detail: str = "") -> None:
    """Count one swallowed race and leave a DEBUG line; races are expected, not errors."""
    DISCONNECT_RACES.labels(kind).inc()
    log.debug("disconnected-session race swallowed (%s) %s", kind, detail)


def error_ack(code: str, message: str) -> dict[str, Any]:
    """The one shape of a failed Socket.IO ack."""
    return {"ok": False, "error": {"code": code, "message": message}}


def handle_socketio_error(exc: Exception) -> dict[str, Any] | None:
    """Default Flask-SocketIO error handler: its return value becomes the client's ack."""
    if is_disconnected_session_error(exc):
        count_disconnect_race("handler", _event_description())
        return None  # the client is gone; there is nobody to ack
    to_ack = getattr(exc, "to_ack", None)
    if callable(to_ack):  # domain errors know their own code and safe message
        return to_ack()
    log.error("unhandled error in Socket.IO handler %s", _event_description(), exc_info=exc)
    return error_ack("internal_error", "The server could not handle this event.")


def _event_description() -> str:
    event = getattr(request, "event", None) or {}
    return f"event={event.get('message')!r} namespace={getattr(request, 'namespace', None)!r}"


def register_socketio_error_handlers(socketio: Any) -> None:
    """Install the default handler on the shared SocketIO object (safe to call once per app)."""
    socketio.on_error_default(handle_socketio_error)


def swallow_disconnected_session(func: F) -> F:
    """Let a handler or background task meet a gone session quietly; every other error passes through."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (KeyError, SocketIsClosedError) as exc:
            if not is_disconnected_session_error(exc):
                raise
            count_disconnect_race("decorator", func.__qualname__)
            return None

    return wrapper  # type: ignore[return-value]


class DisconnectRaceLogFilter(logging.Filter):
    """Brings the libraries' own gone-session error logs down to DEBUG and counts them."""

    def filter(self, record: logging.LogRecord) -> bool:
        kind = None
        if record.exc_info and is_disconnected_session_error(record.exc_info[1]):
            kind = "library"
        elif record.msg == CANNOT_SEND_TO_SID:  # python-engineio's warning for an emit to a gone client
            kind = "send_to_closed"
        if kind is None:
            return True
        DISCONNECT_RACES.labels(kind).inc()
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def install_disconnect_log_filters(logger_names: Iterable[str] = ("engineio.server", "socketio.server")) -> None:
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DisconnectRaceLogFilter) for f in logger.filters):
            logger.addFilter(DisconnectRaceLogFilter())


def install_thread_excepthook() -> None:
    """No thread dies with a traceback printed past logging: races go to DEBUG, the rest to ERROR with the trace."""

    def excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        if is_disconnected_session_error(args.exc_value):
            count_disconnect_race("thread", f"thread={name}")
            return
        # python-engineio's websocket writer closing a socket gunicorn already closed (client reset mid-send).
        if name.endswith(ENGINEIO_WRITER_THREAD_SUFFIX) and isinstance(args.exc_value, OSError) \
                and args.exc_value.errno in _SOCKET_GONE:
            count_disconnect_race("thread", f"thread={name} {args.exc_value}")
            return
        log.error("thread %s died", name, exc_info=args.exc_value or True)

    threading.excepthook = excepthook
