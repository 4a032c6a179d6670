"""gunicorn's own error answers in our JSON shape.

Requests gunicorn cannot parse (a request line or header over its limits, a bad Content-Length, bytes that are not
HTTP) never reach Flask: gunicorn answers them itself from `gunicorn.util.write_error`, as an HTML page. Its
workers look that function up on the module at each call (gunicorn 27.0.1, `Worker.handle_error`), so replacing it
in the worker process gives those clients `{"error": {"code", "message"}}` like every other error; the status,
reason and `Connection: close` stay gunicorn's. tests/unit/test_gunicorn_errors.py fails if that call changes.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util

from utils.http_errors import error_code

MAX_MESSAGE = 200  # gunicorn's message may quote the offending input; the client sent it, but keep it short


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    message = f"{reason}: {mesg}" if mesg else reason
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    body = json.dumps({"error": {"code": error_code(reason), "message": message}})  # ASCII: non-ASCII is escaped
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, (head + body).encode("latin-1"))


def install_json_error_pages() -> None:
    """Call in the worker process (gunicorn.conf.py's post_worker_init)."""
    util.write_error = write_json_error
