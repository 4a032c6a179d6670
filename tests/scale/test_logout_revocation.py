"""A logout on one instance ends the login on every instance sharing Redis: the old cookie opens nothing anywhere,
and dashboards already open elsewhere are disconnected."""

from __future__ import annotations

import threading

import pytest
import requests
import socketio

from tests.reliability.test_origin_and_dashboard import PASSWORD, dashboard_socket, log_in
from tests.server import ServerProcess

pytestmark = [pytest.mark.scale, pytest.mark.integration]


@pytest.fixture
def pair(redis_server, key_prefix):
    env = {"REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": key_prefix, "DASHBOARD_PASSWORD": PASSWORD,
           "SESSION_COOKIE_SECURE": 0}
    servers = [ServerProcess(INSTANCE_ID=f"web-{n}", **env) for n in range(2)]
    try:
        for server in servers:
            server.start(timeout=60)
        yield servers
        for server in servers:
            assert server.bad_log_lines() == [], server.log()[-3000:]
    finally:
        for server in servers:
            server.__exit__(None, None, None)


def open_dashboard(server: ServerProcess, browser: requests.Session,
                   csrf: str) -> tuple[socketio.Client, threading.Event]:
    client = socketio.Client(reconnection=False)
    gone = threading.Event()
    client.on("disconnect", lambda *args: gone.set(), namespace="/dashboard")
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    client.connect(server.url, headers={"Cookie": cookie, "Origin": server.url}, auth={"csrf": csrf},
                   namespaces=["/dashboard"], transports=["polling"], wait_timeout=10)
    return client, gone


def test_logout_on_one_instance_ends_the_login_on_the_other(pair):
    a, b = pair
    browser, csrf = log_in(a)
    on_b = requests.Session()
    on_b.cookies.update(browser.cookies)
    assert on_b.get(b.url + "/", timeout=10, allow_redirects=False).status_code == 200  # one login, both instances
    open_on_b, gone = open_dashboard(b, on_b, csrf)
    try:
        response = browser.post(a.url + "/logout", data={"csrf_token": csrf}, headers={"Origin": a.url}, timeout=10,
                                allow_redirects=False)
        assert response.status_code == 302
        assert on_b.get(b.url + "/", timeout=10, allow_redirects=False).status_code == 302
        for transport in ("websocket", "polling"):
            refused = dashboard_socket(b, on_b, csrf, b.url, transport)
            assert refused.startswith("44/dashboard,") and "unauthorized" in refused, refused
        assert gone.wait(10), "the dashboard open on the other instance was not disconnected"
    finally:
        open_on_b.disconnect()
