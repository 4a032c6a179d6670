"""The edge in front of the Socket.IO endpoint: admission, thread accounting and answers for gone sessions.

`SocketGuard` is WSGI middleware outside Flask-SocketIO's: python-engineio raises gone-session errors before any
handler runs, so only a layer in front of it can answer them. A polling request for a closed or unknown session
gets HTTP 400 with the Engine.IO error body the reference server sends, never a 500 or a traceback (counted as a
disconnect race, utils/socketio_error_handler.py); new sessions pass admission control first (utils/admission.py),
and every request's thread is counted against the budget while it runs, so clients cannot starve the pool.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from utils.admission import RESERVATION_KEY, Admission
from utils.socketio_error_handler import count_disconnect_race, is_disconnected_session_error

# The body the reference Node.js server answers for a sid it does not know; clients treat it as "reconnect".
SESSION_UNKNOWN_BODY = json.dumps({"code": 1, "message": "Session ID unknown"}).encode()


class SocketGuard:
    """WSGI middleware in front of the Socket.IO endpoint; answers requests for gone sessions itself."""

    def __init__(self, wsgi_app: Callable, engineio_server: Any, admission: Admission | None = None,
                 path: str = "/socket.io/") -> None:
        self.wsgi_app = wsgi_app
        self.engineio_server = engineio_server
        self.admission = admission
        self.path = path

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(self.path):
            return self._serve(environ, start_response, "http")
        sid = query_sid(environ)
        websocket = environ.get("HTTP_UPGRADE", "").lower() == "websocket"
        if sid is None:
            kind = "websocket" if websocket else "http"
            problem = _handshake_problem(environ)
            if problem is not None:
                return _bad_handshake(start_response, problem)
            if self.admission is not None and environ.get("REQUEST_METHOD") == "GET":
                reservation, reason, retry_after = self.admission.admit(environ, websocket)
                if reservation is None:
                    # admit() names the reason of every refusal
                    return self.admission.refuse(reason or "capacity", start_response, retry_after)
                environ[RESERVATION_KEY] = reservation
                try:
                    return self._serve(environ, start_response, kind)
                finally:
                    reservation.release()  # a no-op once the session took it over
        else:
            socket = self.engineio_server.sockets.get(sid)
            if socket is None or socket.closed:
                kind = "unknown_session" if socket is None else "closed_session"
                return self._session_unknown(environ, start_response, kind, sid)
            kind = "websocket" if websocket else "long_poll" if environ.get("REQUEST_METHOD") == "GET" else "http"
        try:
            return self._serve(environ, start_response, kind, sid)
        except KeyError as exc:
            # The socket closed between the check above and Engine.IO's own lookup (its POST path does not catch
            # this). Engine.IO raises before start_response, so a clean 400 can still be sent.
            if not is_disconnected_session_error(exc):
                raise
            return self._session_unknown(environ, start_response, "request_race", sid)

    def _serve(self, environ: dict, start_response: Callable, kind: str, sid: str | None = None) -> Iterable[bytes]:
        """Call through, counting the thread this request holds against the budget."""
        if self.admission is None:
            return self.wsgi_app(environ, start_response)
        with self.admission.budget.hold(kind):
            if kind == "long_poll" and sid is not None:
                with self.admission.poll_cap.track(sid):
                    return self._long_poll(environ, start_response, sid)
            return self.wsgi_app(environ, start_response)

    def _long_poll(self, environ: dict, start_response: Callable, sid: str | None) -> Iterable[bytes]:
        """A long-poll ended by the session closing (the client POSTed `1`) gets a NOOP (`6`), as from the Node
        reference server; python-engineio answers it with an empty body, which clients read as a broken poll."""
        answered: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Callable[[bytes], None]:
            answered.update(status=status, headers=headers)
            return lambda data: None  # python-engineio returns its body; it never writes

        body = b"".join(self.wsgi_app(environ, capture))
        socket = self.engineio_server.sockets.get(sid)
        if answered["status"].startswith("200") and not body and (socket is None or socket.closed):
            body = b"6"
        headers = [(k, v) for k, v in answered["headers"] if k.lower() != "content-length"]
        start_response(answered["status"], [*headers, ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _session_unknown(environ: dict, start_response: Callable, kind: str, sid: str | None) -> list[bytes]:
        count_disconnect_race(kind, f"{environ.get('REQUEST_METHOD')} sid={sid}")
        start_response("400 BAD REQUEST", [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(SESSION_UNKNOWN_BODY))),
        ])
        return [SESSION_UNKNOWN_BODY]


def query_sid(environ: dict) -> str | None:
    """The Engine.IO session id a request names, or None for a new session."""
    query = environ.get("QUERY_STRING", "")
    if "sid=" not in query:
        return None
    values = parse_qs(query).get("sid")
    return values[0] if values else None


# The Node reference server's answers to a handshake it cannot start (python-engineio starts a polling session
# without `transport`, and answers another method than GET with 405).
_TRANSPORT_UNKNOWN = {"code": 0, "message": "Transport unknown"}
_BAD_HANDSHAKE_METHOD = {"code": 2, "message": "Bad handshake method"}


def _handshake_problem(environ: dict) -> dict | None:
    method = environ.get("REQUEST_METHOD")
    if method == "OPTIONS":
        return None  # a CORS preflight, which python-engineio answers
    if method != "GET":
        return _BAD_HANDSHAKE_METHOD
    query = environ.get("QUERY_STRING", "")
    transports = parse_qs(query).get("transport") if "transport=" in query else None
    if not transports or transports[0] not in ("polling", "websocket"):
        return _TRANSPORT_UNKNOWN
    return None


def _bad_handshake(start_response: Callable, problem: dict) -> list[bytes]:
    body = json.dumps(problem).encode()
    start_response("400 BAD REQUEST", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
