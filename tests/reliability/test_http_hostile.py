"""Hostile HTTP to the real server: wrong content types, deep or huge JSON, invalid UTF-8, oversized headers, methods
not allowed. Every answer is a 4xx in the JSON error shape, also where gunicorn answers before Flask."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.reliability.support import Api, reliability_server

pytestmark = pytest.mark.integration

KEY = "test-api-key-1-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


server = reliability_server()


def assert_json_error(response: requests.Response, *statuses: int) -> dict:
    assert response.status_code in statuses, (response.status_code, response.text[:200])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert "Traceback" not in response.text and KEY not in response.text
    return error


NESTED = 90_000  # far past the JSON decoder's recursion limit, still under the body limit

BODIES = {
    "form body": ("application/x-www-form-urlencoded", b"channel=a&event=b&data=1", 400),
    "multipart body": ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n"
                                                         b"1\r\n--x--\r\n", 400),
    "XML": ("application/xml", b"<publish channel='a'/>", 400),
    "JSON array, not object": ("application/json", b"[1,2,3]", 400),
    "JSON string": ("application/json", b'"publish"', 400),
    "truncated JSON": ("application/json", b'{"channel": "a", "event": ', 400),
    "invalid UTF-8": ("application/json", b'{"channel": "\xff\xfe", "event": "e", "data": 1}', 400),
    "nested 90000 deep (whole body)": ("application/json", b"[" * NESTED + b"]" * NESTED, 400),
    "nested 90000 deep (data)": ("application/json", b'{"channel":"a","event":"e","data":' + b"[" * NESTED
                                 + b"]" * NESTED + b"}", 400),
    "NaN data": ("application/json", b'{"channel":"a","event":"e","data":NaN}', 400),
    "5000-digit number": ("application/json", b'{"channel":"a","event":"e","data":' + b"7" * 5000 + b"}", 400),
    "huge body (3 MB)": ("application/json", b'{"channel":"a","event":"e","data":"' + b"x" * 3_000_000 + b'"}', 413),
    "empty body": ("application/json", b"", 400),
    "idempotency key of 100000 characters": ("application/json", b'{"channel":"a","event":"e","idempotency_key":"'
                                             + b"k" * 100_000 + b'"}', 400),
    "idempotency key with a NUL": ("application/json", b'{"channel":"a","event":"e","idempotency_key":"\\u0000"}', 400),
    "1000 channels": ("application/json", b'{"event":"e","channels":[' + b",".join([b'"a"'] * 1000) + b"]}", 400),
    "channels nested 90000 deep": ("application/json", b'{"event":"e","channels":' + b"[" * NESTED + b"]" * NESTED
                                   + b"}", 400),
    "exclude of 100000 characters": ("application/json", b'{"channel":"a","event":"e","exclude":"' + b"s" * 100_000
                                     + b'"}', 400),
}


@pytest.mark.parametrize("path", ["/api/v1/publish", "/api/v1/tokens", "/api/v1/publish/batch", "/api/v1/tokens/revoke",
                                  "/api/v1/users/alice/disconnect", "/api/v1/users/alice/unsubscribe"])
@pytest.mark.parametrize("content_type, body, status", BODIES.values(), ids=BODIES.keys())
def test_bad_bodies(server, path, content_type, body, status):
    if path.endswith("/batch") and status == 413:
        status = 400  # the batch limit is 100 messages' worth: 3 MB fits, and is then no list of messages
    if path.endswith("/disconnect") and body == b"":
        response = requests.post(server.url + path, data=body, headers={**AUTH, "Content-Type": content_type},
                                 timeout=30)
        assert response.status_code == 200 and response.json()["disconnected"] == 0  # no body: the defaults
        return
    response = requests.post(server.url + path, data=body, headers={**AUTH, "Content-Type": content_type},
                             timeout=30)
    assert_json_error(response, status)


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("DELETE", "/api/v1/publish", 405),
        ("PUT", "/api/v1/tokens", 405),
        ("GET", "/api/v1/publish", 405),
        ("PATCH", "/api/v1/channels", 405),
        ("POST", "/livez", 405),
        ("TRACE", "/api/v1/publish", 405),
        ("GET", "/api/v1/nothing-here", 404),
        ("GET", "/no/such/page", 404),
    ],
)
def test_methods_and_paths(server, method, path, status):
    error = assert_json_error(requests.request(method, server.url + path, headers=AUTH, timeout=10), status)
    assert error["code"] in ("method_not_allowed", "not_found")


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-key"}, 401),
        ({"Authorization": "Basic dGVzdDp0ZXN0"}, 401),
        ({"Authorization": "Bearer " + "k" * 4000}, 401),
        ({"Authorization": "Bearer \u00e9\u00e8"}, 401),
    ],
)
def test_bad_credentials(server, headers, status):
    response = requests.post(server.url + "/api/v1/publish", json={"channel": "a", "event": "e"}, headers=headers,
                             timeout=10)
    error = assert_json_error(response, status)
    assert "wrong-key" not in response.text and error["code"] == "unauthorized"


@pytest.mark.parametrize("query", ["since=abc", "since=-1", "limit=0", "limit=100000", "since=%F0%9F%92%A9",
                                   "since=1e3", "limit=" + "9" * 3000])
def test_bad_history_queries(server, query):
    assert_json_error(requests.get(f"{server.url}/api/v1/channels/a/history?{query}", headers=AUTH, timeout=10), 400)


@pytest.mark.parametrize("channel", ["%00", "a" * 3000, "..", "%F0%9F%92%A9", "a%20b"])
def test_bad_channel_names_in_paths(server, channel):
    response = requests.get(f"{server.url}/api/v1/channels/{channel}/presence", headers=AUTH, timeout=10)
    assert_json_error(response, 400, 404)


def raw_request(server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\nConnection: close\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(200))
        + b"Connection: close\r\n\r\n",
        b"GET /api/v1/channels/a/history?limit=" + b"9" * 10000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Bad: \xff\xfe\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
    ],
    ids=["header 20 KB", "200 headers", "request line 10 KB", "bad Content-Length", "not HTTP"],
)
def test_oversized_and_broken_requests(server, request_bytes):
    """gunicorn refuses these before Flask sees them: 4xx, never 5xx, in our JSON shape (integration/gunicorn_errors)"""
    answer = raw_request(server, request_bytes)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"Content-Type: application/json" in head
    assert set(json.loads(body)["error"]) == {"code", "message"}
    assert requests.get(server.url + "/livez", timeout=10).status_code == 200


CHUNKED_PUBLISH = (b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                   + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")


@pytest.mark.parametrize("body", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"],
                         ids=["bad chunk size", "chunk without its CRLF"])
def test_a_malformed_chunked_body_is_a_400_not_a_500(server, body):
    """gunicorn parses a chunked body while the app reads it, so its errors reach the view: 400 in the error shape
    with Connection: close, and no ERROR line (the module's server fails at the end on one)."""
    answer = raw_request(server, CHUNKED_PUBLISH + body)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    head, payload = answer.split(b"\r\n\r\n", 1)
    assert b"Connection: close" in head
    assert json.loads(payload)["error"]["code"] == "bad_request"


def test_a_chunked_publish_arriving_in_pieces_is_served_and_the_next_request_too(server):
    """Chunked bodies are read ahead by the poller (integration/request_reader.py) up to their last chunk, however
    the bytes are split; the kept-alive connection's next request is answered after it."""
    body = json.dumps({"channel": "chunked.pieces", "event": "e", "data": {"n": 1}}).encode()
    pieces = [CHUNKED_PUBLISH, b"%x\r\n" % 10 + body[:10],
              b"\r\n%x;note=1\r\n" % (len(body) - 10) + body[10:] + b"\r\n", b"0\r\n",
              b"\r\nGET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.2)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert answer.count(b"HTTP/1.1 200") == 2, answer[:600]  # the publish, then /livez
    history = requests.get(f"{server.url}/api/v1/channels/chunked.pieces/history", headers=AUTH, timeout=10).json()
    assert [m["data"] for m in history["messages"]] == [{"n": 1}]


def test_server_still_publishes_after_all_that(server):
    assert Api(server).publish("after.hostile", "e", {"ok": True})["offset"] >= 1
