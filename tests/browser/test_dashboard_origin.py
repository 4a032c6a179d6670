"""No cross-site use of a logged-in dashboard: a foreign page holding the victim's cookie still cannot open the
'/dashboard' socket (either transport) or post the dashboard's forms. Real server, raw python-socketio clients."""

from __future__ import annotations

import json
import re

import pytest
import requests
import websocket

from tests.browser.conftest import API_KEY

pytestmark = pytest.mark.integration

EVIL = "https://evil.example"


def logged_in_cookie_and_token(server) -> tuple[str, str]:
    """Log in like the browser would; the cookie is Secure, so it is passed by hand over plain http."""
    session = requests.Session()
    page = session.get(server.url + "/login", timeout=5).text
    token = csrf_in(page, r'name="csrf_token" value="([^"]+)"')
    cookie = session.cookies["session"]
    response = session.post(server.url + "/login", timeout=5, allow_redirects=False,
                            headers={"Origin": server.url, "Cookie": f"session={cookie}"},
                            data={"csrf_token": token, "password": API_KEY})
    assert response.status_code == 302
    cookie = response.cookies["session"]
    assert cookie is not None
    page = requests.get(server.url + "/", timeout=5, headers={"Cookie": f"session={cookie}"}).text
    return cookie, csrf_in(page, r'name="csrf-token" content="([^"]+)"')


def csrf_in(page: str, pattern: str) -> str:
    match = re.search(pattern, page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def try_dashboard_socket(server, transport: str, origin: str | None, cookie: str | None, token: str | None) -> str:
    """Open '/dashboard' by hand, with exactly these headers: "accepted", "refused" (CONNECT_ERROR) or the HTTP
    status that refused the Engine.IO handshake. Raw, because client libraries add an Origin of their own."""
    cookies = {"Cookie": f"session={cookie}"} if cookie else {}
    headers = {**cookies, **({"Origin": origin} if origin else {})}
    connect_packet = "40/dashboard," + json.dumps({"csrf": token} if token else {})
    query = "/socket.io/?EIO=4&transport="
    if transport == "websocket":
        try:
            ws = websocket.create_connection(server.url.replace("http", "ws") + query + "websocket", timeout=5,
                                             header=[f"{k}: {v}" for k, v in cookies.items()],
                                             origin=origin, suppress_origin=origin is None)
        except websocket.WebSocketBadStatusException as exc:
            return str(exc.status_code)
        try:
            assert str(ws.recv()).startswith("0{")  # Engine.IO open (text frames: str)
            ws.send(connect_packet)
            answer = str(ws.recv())
            while answer == "2":  # a ping got there first (busy machine)
                ws.send("3")
                answer = str(ws.recv())
        finally:
            ws.close()
    else:
        opened = requests.get(server.url + query + "polling", headers=headers, timeout=5)
        if opened.status_code != 200:
            return str(opened.status_code)
        sid = json.loads(opened.text[1:])["sid"]
        url = server.url + query + f"polling&sid={sid}"
        assert requests.post(url, data=connect_packet, headers=headers, timeout=5).status_code == 200
        answer = requests.get(url, headers=headers, timeout=5).text.split("\x1e")[-1]
        while answer == "2":  # a ping got there first (busy machine)
            requests.post(url, data="3", headers=headers, timeout=5)
            answer = requests.get(url, headers=headers, timeout=5).text.split("\x1e")[-1]
        requests.post(url, data="1", headers=headers, timeout=5)  # Engine.IO close
    if answer.startswith("40/dashboard,"):
        return "accepted"
    assert answer.startswith("44/dashboard,"), answer
    return "refused"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_dashboard_socket_needs_own_origin_cookie_and_token(server, transport):
    cookie, token = logged_in_cookie_and_token(server)
    assert try_dashboard_socket(server, transport, server.url, cookie, token) == "accepted"  # the page itself
    assert try_dashboard_socket(server, transport, EVIL, cookie, token) in ("400", "403")  # a foreign page
    assert try_dashboard_socket(server, transport, server.url, cookie, None) == "refused"  # cookie alone
    assert try_dashboard_socket(server, transport, server.url, None, token) == "refused"  # no login
    assert server.bad_log_lines() == []


def test_dashboard_forms_refuse_foreign_origins(server):
    cookie, token = logged_in_cookie_and_token(server)
    response = requests.post(server.url + "/logout", timeout=5, allow_redirects=False, data={"csrf_token": token},
                             headers={"Cookie": f"session={cookie}", "Origin": EVIL})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_origin"
    still_in = requests.get(server.url + "/", timeout=5, allow_redirects=False, headers={"Cookie": f"session={cookie}"})
    assert still_in.status_code == 200


def test_dashboard_headers_on_the_real_server(server):
    response = requests.get(server.url + "/login", timeout=5)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # Nothing secret in the pages: neither the API keys nor the signing key.
    assert API_KEY not in response.text and server.env["SECRET_KEY"] not in response.text
