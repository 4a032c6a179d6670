"""gunicorn's own error answers in our JSON shape, and the body errors it raises into the app.

Requests gunicorn cannot parse (a request line or header over its limits, a bad Content-Length, bytes that are not
HTTP) never reach Flask: gunicorn answers them itself from `gunicorn.util.write_error`, as an HTML page. Its
workers look that function up on the module at each call (gunicorn 27.0.1, `Worker.handle_error`), so replacing it
in the worker process gives those clients `{"error": {"code", "message"}}` like every other error; the status,
reason and `Connection: close` stay gunicorn's. tests/unit/test_gunicorn_errors.py fails if that call changes.

A body gunicorn reads for the app while the app reads `wsgi.input` (chunked: its framing is parsed as it goes) can
turn out malformed (a bad chunk size or terminator) or end early; gunicorn's reader then raises into the view, which
was an ERROR traceback and a 500. register_body_read_errors makes it the client's 400.
"""

from __future__ import annotations

import json
import socket

from flask import Flask, Response
from gunicorn import util
from gunicorn.http import errors as http_errors

from utils.http_errors import error_code, json_error

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


# What gunicorn's body reader (gunicorn.http.body) raises from wsgi.input.read: a parse error, or the client gone.
BODY_READ_ERRORS = (http_errors.ParseException, http_errors.NoMoreData)


def _body_read_error(exc: Exception) -> Response:
    # The connection is then closed, with `Connection: close` (integration/gunicorn_keepalive.py): what follows the
    # bad bytes cannot be trusted to start the next request.
    return json_error(400, "bad_request", f"The request body could not be read: {exc}"[:MAX_MESSAGE])


def register_body_read_errors(app: Flask) -> None:
    for error in BODY_READ_ERRORS:
        app.register_error_handler(error, _body_read_error)
