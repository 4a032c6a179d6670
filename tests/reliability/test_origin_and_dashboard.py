"""Cross-origin refusals and the dashboard's defences against the real server: Engine.IO checks Origin on every
transport (handshake, websocket, upgrade of an existing session); the dashboard's cookie-authenticated forms and its
Socket.IO namespace refuse foreign origins even when CORS_ALLOWED_ORIGINS is `*`; cookie flags, CSRF, security
headers, login rate limit, and no secret in any page, error body or log line."""

from __future__ import annotations

import json
import re
import socket

import pytest
import requests

from tests.eio import EIO_PATH, PollingSession, RawWebSocket, websocket_request
from tests.reliability.support import reliability_server, running_server
from tests.server import TEST_ENV

pytestmark = pytest.mark.integration

EVIL = "https://evil.example"
PASSWORD = "dashboard-password-for-tests"
SECRETS = (PASSWORD, TEST_ENV["SECRET_KEY"], *TEST_ENV["API_KEYS"].split(","))


server = reliability_server()


@pytest.fixture(scope="module")
def open_server():
    """Socket.IO open to every origin, as a public deployment may configure; the dashboard must stay closed."""
    with running_server(CORS_ALLOWED_ORIGINS="*", DASHBOARD_PASSWORD=PASSWORD, SESSION_COOKIE_SECURE=0) as running:
        yield running
        log = running.log()
        assert running.bad_log_lines() == []
        assert not [s for s in SECRETS if s in log], "a secret reached the log"


def handshake(server, origin: str | None) -> requests.Response:
    headers = {"Origin": origin} if origin else {}
    return requests.get(server.url + EIO_PATH.format(transport="polling"), headers=headers, timeout=10)


def websocket_status(server, origin: str | None, sid: str | None = None) -> int:
    request = websocket_request(server.port, sid)
    if origin:
        request = request.replace(b"\r\n\r\n", f"\r\nOrigin: {origin}\r\n\r\n".encode(), 1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        head = sock.recv(4096)
    return int(head.split(b" ", 2)[1])


# ---- Engine.IO origin checks (same origin only: CORS_ALLOWED_ORIGINS empty) ----------------------------------------

def test_polling_handshake_from_a_foreign_origin_is_refused(server):
    response = handshake(server, EVIL)
    assert response.status_code == 400 and "Not an accepted origin" in response.text
    assert handshake(server, server.url).status_code == 200  # its own origin
    assert handshake(server, None).status_code == 200  # no Origin: not a browser


@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1", "http://127.0.0.1.evil.example"])
def test_websocket_handshake_from_a_foreign_origin_is_refused(server, origin):
    assert websocket_status(server, origin) == 400
    assert websocket_status(server, server.url) == 101


def test_websocket_upgrade_of_an_existing_session_from_a_foreign_origin_is_refused(server):
    session = PollingSession(server.url)
    assert websocket_status(server, EVIL, session.sid) == 400
    assert websocket_status(server, server.url, session.sid) == 101


def test_polling_requests_on_an_existing_session_from_a_foreign_origin_are_refused(server):
    session = PollingSession(server.url)
    for method in ("GET", "POST"):
        response = requests.request(method, session.url, data=b"3", headers={"Origin": EVIL}, timeout=10)
        assert response.status_code == 400 and "Not an accepted origin" in response.text


def test_allow_list_admits_only_its_entries(server_factory):
    listed = server_factory(CORS_ALLOWED_ORIGINS="https://app.example")
    assert handshake(listed, "https://app.example").status_code == 200
    assert handshake(listed, EVIL).status_code == 400
    assert websocket_status(listed, EVIL) == 400
    assert websocket_status(listed, "https://app.example") == 101


# ---- dashboard -------------------------------------------------------------------------------------------------------

def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf[-_]token" (?:content|value)="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def log_in(server) -> tuple[requests.Session, str]:
    browser = requests.Session()
    csrf = csrf_from(browser.get(server.url + "/login", timeout=10).text)
    response = browser.post(server.url + "/login", data={"csrf_token": csrf, "password": PASSWORD},
                            headers={"Origin": server.url}, timeout=10, allow_redirects=False)
    assert response.status_code in (302, 303), response.text[:300]
    page = browser.get(server.url + "/", timeout=10)
    assert page.status_code == 200
    return browser, csrf_from(page.text)


def dashboard_socket(server, browser: requests.Session, csrf: str | None, origin: str, transport: str) -> str:
    """Open the dashboard's namespace as a browser would (one Origin header, the session cookie); return the
    Socket.IO answer to the namespace connect: '40/dashboard,...' accepted, '44/dashboard,...' refused."""
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    auth = json.dumps({"csrf": csrf} if csrf else {})
    headers = {"Cookie": cookie, "Origin": origin}
    if transport == "polling":
        opened = requests.get(server.url + EIO_PATH.format(transport="polling"), headers=headers, timeout=10)
        if opened.status_code != 200:
            return f"HTTP {opened.status_code}"
        sid = json.loads(opened.text[1:])["sid"]
        url = server.url + EIO_PATH.format(transport="polling") + f"&sid={sid}"
        requests.post(url, data=f"40/dashboard,{auth}", headers=headers, timeout=10)
        return requests.get(url, headers=headers, timeout=10).text
    extra = f"\r\nCookie: {cookie}\r\nOrigin: {origin}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(websocket_request(server.port).replace(b"\r\n\r\n", extra, 1))
        ws = RawWebSocket.__new__(RawWebSocket)
        ws.sock, ws.buffer = sock, b""
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        if int(head.split(b" ", 2)[1]) != 101:
            return "HTTP " + head.split(b" ", 2)[1].decode()
        ws.buffer = head.split(b"\r\n\r\n", 1)[1]
        ws.recv()  # Engine.IO open
        ws.send(f"40/dashboard,{auth}")
        return ws.recv() or ""


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_dashboard_socket_refuses_foreign_origins_even_when_socketio_is_open_to_all(open_server, transport):
    browser, csrf = log_in(open_server)
    assert dashboard_socket(open_server, browser, csrf, open_server.url, transport).startswith("40/dashboard,")
    # A page elsewhere riding the operator's cookie, even if it somehow had the CSRF token: refused.
    hijack = dashboard_socket(open_server, browser, csrf, EVIL, transport)
    assert hijack.startswith("44/dashboard,") and "unauthorized" in hijack, hijack
    # Without the token (all a foreign page can have): refused too.
    assert dashboard_socket(open_server, browser, None, open_server.url, transport).startswith("44/dashboard,")


@pytest.mark.parametrize("path", ["/logout", "/login"])
def test_dashboard_forms_refuse_foreign_origins(open_server, path):
    browser, csrf = log_in(open_server)
    response = browser.post(open_server.url + path, data={"csrf_token": csrf, "password": PASSWORD},
                            headers={"Origin": EVIL}, timeout=10, allow_redirects=False)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden_origin"
    assert browser.get(open_server.url + "/", timeout=10, allow_redirects=False).status_code == 200  # still in


def test_dashboard_forms_need_the_csrf_token(open_server):
    browser, _ = log_in(open_server)
    for token in (None, "", "forged"):
        data = {"password": PASSWORD} | ({"csrf_token": token} if token is not None else {})
        response = browser.post(open_server.url + "/logout", data=data, headers={"Origin": open_server.url},
                                timeout=10, allow_redirects=False)
        assert response.status_code == 400, response.text[:200]
    assert browser.get(open_server.url + "/", timeout=10, allow_redirects=False).status_code == 200


def test_security_headers_and_no_inline_script(open_server):
    browser, _ = log_in(open_server)
    for path in ("/login", "/"):
        response = browser.get(open_server.url + path, timeout=10)
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", response.text, re.S)
        assert all("src=" in attrs and not body.strip() for attrs, body in scripts), "inline script"
        assert not re.search(r"\son[a-z]+\s*=", response.text), "inline event handler"
        assert not [s for s in SECRETS if s in response.text]


def test_session_cookie_flags_in_production(server_factory):
    """Production default (SESSION_COOKIE_SECURE unset): Secure, HttpOnly, SameSite=Lax."""
    production = server_factory(DASHBOARD_PASSWORD=PASSWORD)
    response = requests.get(production.url + "/login", timeout=10)
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie


def test_login_is_rate_limited(server_factory):
    limited = server_factory(DASHBOARD_PASSWORD=PASSWORD, SESSION_COOKIE_SECURE=0)
    browser = requests.Session()
    csrf = csrf_from(browser.get(limited.url + "/login", timeout=10).text)
    statuses = []
    for attempt in range(8):
        response = browser.post(limited.url + "/login", data={"csrf_token": csrf, "password": f"guess-{attempt}"},
                                headers={"Origin": limited.url}, timeout=10, allow_redirects=False)
        statuses.append(response.status_code)
        assert "guess-" not in response.text and PASSWORD not in response.text
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
    right = browser.post(limited.url + "/login", data={"csrf_token": csrf, "password": PASSWORD},
                         headers={"Origin": limited.url}, timeout=10, allow_redirects=False)
    assert right.status_code == 429 and int(right.headers["Retry-After"]) >= 1  # even the right one waits


def test_no_secret_in_error_bodies(open_server):
    answers = [
        requests.post(open_server.url + "/api/v1/publish", headers={"Authorization": f"Bearer {PASSWORD}"},
                      timeout=10),
        requests.post(open_server.url + "/api/v1/publish", data=b"{",
                      headers={"Authorization": f"Bearer {TEST_ENV['API_KEYS'].split(',')[0]}"}, timeout=10),
        requests.get(open_server.url + "/metrics?token=" + TEST_ENV["SECRET_KEY"], timeout=10),
        requests.post(open_server.url + "/login", data={"password": TEST_ENV["SECRET_KEY"]}, timeout=10),
    ]
    for response in answers:
        assert response.status_code < 500
        assert not [s for s in SECRETS if s in response.text], response.text[:200]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_a_cookie_kept_from_before_logout_opens_nothing(open_server, transport):
    """Before: the pre-logout cookie (the CSRF token is inside it) still opened `/` and the '/dashboard' namespace,
    and could publish and kick clients, for up to 12 hours."""
    browser, csrf = log_in(open_server)
    kept = requests.Session()
    kept.cookies.update(browser.cookies)
    assert dashboard_socket(open_server, kept, csrf, open_server.url, transport).startswith("40/dashboard,")
    response = browser.post(open_server.url + "/logout", data={"csrf_token": csrf},
                            headers={"Origin": open_server.url}, timeout=10, allow_redirects=False)
    assert response.status_code == 302
    assert kept.get(open_server.url + "/", timeout=10, allow_redirects=False).status_code == 302
    refused = dashboard_socket(open_server, kept, csrf, open_server.url, transport)
    assert refused.startswith("44/dashboard,") and "unauthorized" in refused, refused


def test_cors_wildcard_never_allows_credentials(open_server):
    """Before: with CORS_ALLOWED_ORIGINS=* any Origin was echoed with Access-Control-Allow-Credentials: true, so any
    page could open a Socket.IO session carrying the visitor's cookies and read its answers."""
    for method in ("GET", "OPTIONS"):
        response = requests.request(method, open_server.url + EIO_PATH.format(transport="polling"),
                                    headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}, timeout=10)
        assert response.status_code == 200
        assert response.headers.get("Access-Control-Allow-Origin") == EVIL  # public clients from any page: yes
        assert "Access-Control-Allow-Credentials" not in response.headers  # with the visitor's cookies: no


def test_cors_list_keeps_credentials_for_its_entries(server_factory):
    listed = server_factory(CORS_ALLOWED_ORIGINS="https://app.example")
    response = requests.get(listed.url + EIO_PATH.format(transport="polling"),
                            headers={"Origin": "https://app.example"}, timeout=10)
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
