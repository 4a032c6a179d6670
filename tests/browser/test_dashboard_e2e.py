"""The dashboard in real headless Chromium against the real server: live counts, publishing, kicking, restarts.

A python-socketio client plays the realtime client, the HTTP API plays a backend; the page must show what they do
within seconds, over its own Socket.IO connection, and say nothing in the console while it works.
"""

from __future__ import annotations

import re
import time

import pytest
import requests
import socketio

from tests.browser.conftest import API_KEY, log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Chromium logs each failed request while the server drains (503 for new sessions) and is down (refused);
# nothing else may appear then.
_RESTART_NOISE = re.compile(r"net::ERR_CONNECTION_REFUSED|net::ERR_CONNECTION_RESET|net::ERR_EMPTY_RESPONSE|"
                            r"status of 503 \(SERVICE UNAVAILABLE\)|WebSocket connection to '.*' failed")


def text_of(page, selector: str) -> str:
    return page.text_content(selector).strip()


def wait_for_text(page, selector: str, expected: str, timeout: float = 5.0) -> None:
    page.wait_for_function("([s, t]) => document.querySelector(s).textContent.trim() === t",
                           arg=[selector, expected], timeout=timeout * 1000)


def publish_over_api(server, channel: str, event: str, data) -> dict:
    response = requests.post(server.url + "/api/v1/publish", timeout=5, headers={"Authorization": f"Bearer {API_KEY}"},
                             json={"channel": channel, "event": event, "data": data})
    assert response.status_code == 200, response.text
    return response.json()


def event_rows(page) -> list[str]:
    return page.eval_on_selector_all("#events li summary", "items => items.map(i => i.textContent)")


def watch(page, channel: str) -> None:
    page.fill("#watch-channel", channel)
    page.click("#watch-form button[type=submit]")
    page.wait_for_selector(f"#watched li:has-text('{channel}')")


def test_dashboard_end_to_end(server_factory, open_page):
    server = server_factory(ALLOW_ANONYMOUS="1")
    page, console = open_page()
    log_in(page, server.url)
    wait_for_text(page, "#clients-total", "0")
    assert text_of(page, "#dashboards") == "1"
    assert text_of(page, "#version") != "–"

    # A realtime client comes and goes: the count follows within a couple of samples.
    client = socketio.Client(reconnection=False)
    client.connect(server.url, transports=["websocket"], wait_timeout=5)
    try:
        wait_for_text(page, "#clients-total", "1")
        assert text_of(page, "#clients-websocket") == "1"
        sid = client.get_sid("/")
        page.wait_for_selector(f"#clients td:text-is('{sid}')")
    finally:
        client.disconnect()
    wait_for_text(page, "#clients-total", "0")
    assert int(text_of(page, "#disconnects-per-minute")) >= 1

    # Publish from the form: bad input is explained, good input is acknowledged and shows up in the stream.
    watch(page, "orders.eu")
    page.fill("#publish-channel", "orders..eu")
    page.fill("#publish-event", "created")
    page.fill("#publish-data", "{not json")
    page.click("#publish-form button[type=submit]")
    assert "segments" in text_of(page, "#publish-channel-error")
    assert text_of(page, "#publish-data-error").startswith("not valid JSON")
    page.fill("#publish-channel", "orders.eu")
    page.fill("#publish-event", "connect")  # passes the page's own checks; the server refuses reserved names
    page.fill("#publish-data", '{"id": 7, "items": ["tea", "cake"]}')
    page.click("#publish-form button[type=submit]")
    page.wait_for_selector("#publish-event-error:has-text('reserved')")
    page.fill("#publish-event", "created")
    page.click("#publish-form button[type=submit]")
    page.wait_for_selector("#publish-result:has-text('Published to orders.eu at offset 1')")
    page.wait_for_selector("#events li summary:has-text('created')", timeout=3000)
    page.click("#events li summary")  # expand: the pretty JSON appears
    assert '"items": [' in text_of(page, "#events li pre")

    # A backend publishes over HTTP: on the page within 2 s.
    started = time.monotonic()
    publish_over_api(server, "orders.eu", "shipped", {"id": 7})
    page.wait_for_selector("#events li summary:has-text('shipped')", timeout=2000)
    api_to_page = time.monotonic() - started
    assert api_to_page < 2.0
    page.wait_for_selector("#channels td:text-is('orders.eu') ~ td:text-is('2')")  # its offset after two publishes

    # Pause holds new events back; the filter hides what does not match.
    page.click("#pause")
    publish_over_api(server, "orders.eu", "held", {})
    page.wait_for_selector("#events-status:has-text('1 new event(s) waiting')", timeout=3000)
    assert not any("held" in row for row in event_rows(page))
    page.click("#pause")
    page.wait_for_selector("#events li summary:has-text('held')")
    page.fill("#event-filter", "shipped")
    assert page.locator("#events li:visible").count() == 1
    page.fill("#event-filter", "")

    # Disconnect a client from the table, behind a confirmation.
    client = socketio.Client(reconnection=False)
    client.connect(server.url, transports=["polling"], wait_timeout=5)
    sid = client.get_sid("/")
    page.click(f"#clients button[data-sid='{sid}']")
    page.click("#kick-cancel")
    time.sleep(0.5)
    assert client.connected
    page.click(f"#clients button[data-sid='{sid}']")
    page.click("#kick-confirm")
    page.wait_for_selector("#clients-result:has-text('Disconnected')")
    server.wait_until(lambda: not client.connected, timeout=5, what="kicked client to notice")

    assert console.errors() == []
    assert server.bad_log_lines() == []

    # Restart the server on the same port: the page says so, comes back by itself and watches again.
    before_restart = console.mark()
    server.stop()
    page.wait_for_selector("#connection-state:not([data-state=connected])", timeout=10_000)
    restarted = server_factory(port=server.port, ALLOW_ANONYMOUS="1")
    page.wait_for_selector("#connection-state[data-state=connected]", timeout=15_000)
    restart_noise = [text for kind, text in console.messages[before_restart:] if kind in ("error", "warning")]
    assert all(_RESTART_NOISE.search(text) for text in restart_noise), restart_noise
    after_restart = console.mark()
    publish_over_api(restarted, "orders.eu", "after_restart", {"ok": True})
    page.wait_for_selector("#events li summary:has-text('after_restart')", timeout=5000)
    wait_for_text(page, "#clients-total", "0")

    assert [text for kind, text in console.messages[after_restart:] if kind in ("error", "warning")] == []
    assert console.page_errors == []
    assert restarted.bad_log_lines() == []


def test_dashboard_fits_a_phone_and_works_by_keyboard(server, open_page):
    page, console = open_page(390, 844)
    log_in(page, server.url)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than the phone"

    # Keyboard only: tab to the publish form and submit it with Enter.
    page.focus("#publish-channel")
    page.keyboard.type("public:phone")
    page.keyboard.press("Tab")
    page.keyboard.type("tap")
    page.keyboard.press("Tab")
    page.keyboard.press("Control+A")
    page.keyboard.type('{"from": "keyboard"}')
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Publish"
    page.keyboard.press("Enter")
    page.wait_for_selector("#publish-result:has-text('Published to public:phone')")
    assert console.errors() == []


def test_logout_ends_every_tab_of_that_login(server, open_page):
    page, console = open_page()
    log_in(page, server.url)
    other_tab = page.context.new_page()  # same cookie jar: a second tab of the same login
    other_tab.goto(server.url + "/")
    other_tab.wait_for_selector("#connection-state[data-state=connected]")
    assert page.context.cookies()[0]["secure"] is True  # the production default, even on http://127.0.0.1

    page.click(".logout button")
    page.wait_for_url(server.url + "/login")
    # The server ends the other tab's socket; its reconnect is refused without a login, so it goes to the form.
    other_tab.wait_for_url(server.url + "/login", timeout=10_000)
    page.goto(server.url + "/")
    assert page.url == server.url + "/login"
    assert console.errors() == []


def test_disconnect_user_and_the_revocations_in_the_event_list(server, open_page):
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {API_KEY}"

    def token(sub: str) -> str:
        response = api.post(server.url + "/api/v1/tokens", json={"sub": sub, "channels": ["**"]}, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()["token"]

    page, console = open_page()
    log_in(page, server.url)
    watch(page, "orders.eu")  # snapshots start with the first watch
    clients = [socketio.Client(reconnection=False) for _ in range(2)]
    try:
        for client in clients:
            client.connect(server.url, auth={"token": token("carol")}, transports=["websocket"], wait_timeout=5)
        page.wait_for_selector("#clients button[data-sub='carol']")
        page.click("#clients button[data-sub='carol']")
        page.click("#kick-user-cancel")
        time.sleep(0.5)
        assert all(client.connected for client in clients)
        page.click("#clients button[data-sub='carol']")
        page.click("#kick-user-confirm")
        page.wait_for_selector("#clients-result:has-text('Disconnected user carol: 2 connection(s) on 1 instance(s).')")
        server.wait_until(lambda: not any(client.connected for client in clients), timeout=5, what="carol to leave")
        page.wait_for_selector("#events li.control:has-text('disconnect user')", timeout=3000)
        assert "sub carol: 2 connection(s) here" in page.text_content("#events li.control")

        response = api.post(server.url + "/api/v1/tokens/revoke", json={"sub": "carol"}, timeout=5)
        assert response.status_code == 200, response.text
        page.wait_for_selector("#events li.control:has-text('revoke tokens')", timeout=3000)
    finally:
        for client in clients:
            client.disconnect()
    assert console.errors() == [] and console.page_errors == []
    assert server.bad_log_lines() == []
