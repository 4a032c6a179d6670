"""integration/gunicorn_errors.py: gunicorn's own refusals in the JSON error shape, and the call it relies on."""

from __future__ import annotations

import inspect
import json
import socket

import pytest
from gunicorn import util
from gunicorn.workers.base import Worker
from werkzeug.exceptions import default_exceptions

from integration.gunicorn_errors import write_json_error


def test_gunicorn_still_answers_through_util_write_error():
    """The replacement only works while workers look write_error up on the module with these arguments."""
    assert "util.write_error(client, status_int, reason, mesg)" in inspect.getsource(Worker.handle_error)
    assert list(inspect.signature(util.write_error).parameters) == ["sock", "status_int", "reason", "mesg"]


def answer_to(status: int, reason: str, mesg: str) -> tuple[list[str], dict]:
    server, client = socket.socketpair()
    with server, client:
        write_json_error(server, status, reason, mesg)
        server.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    head, body = data.decode("latin-1").split("\r\n\r\n", 1)
    lines = head.split("\r\n")
    assert f"Content-Length: {len(body)}" in lines and "Content-Type: application/json" in lines
    return lines, json.loads(body)


def test_refusal_is_json_with_gunicorns_status():
    lines, body = answer_to(431, "Request Header Fields Too Large", "Error parsing headers: 'limit request headers'")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large" and "Connection: close" in lines
    assert body == {"error": {"code": "request_header_fields_too_large",
                              "message": "Request Header Fields Too Large: Error parsing headers: "
                                         "'limit request headers'"}}


def test_quoted_input_is_escaped_and_cut_short():
    _, body = answer_to(400, "Bad Request", "Invalid Request Line '" + "\u00ff\r\n<x>" * 300 + "'")
    assert body["error"]["code"] == "bad_request"
    assert len(body["error"]["message"]) == 200 and body["error"]["message"].endswith("...")


@pytest.mark.parametrize("status, reason, code", [
    (418, "I'm a teapot", "im_a_teapot"),
    (431, "Request Header Fields Too Large", "request_header_fields_too_large"),
    (505, "HTTP Version Not Supported", "http_version_not_supported"),
])
def test_gunicorn_and_flask_give_a_reason_the_same_code(app, status, reason, code):
    """One slug function for both: a client must not see two codes for one status depending on who refused."""
    _, body = answer_to(status, reason, "")
    with app.test_request_context():
        flask_answer = app.handle_user_exception(default_exceptions[status]())
    assert flask_answer.status_code == status
    assert body["error"]["code"] == flask_answer.get_json()["error"]["code"] == code
