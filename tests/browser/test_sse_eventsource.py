"""EventSource in headless Chromium against the real server: named events, and the browser's own reconnect with
Last-Event-ID after the server ended the stream, each message exactly once and in order."""

from __future__ import annotations

import time

import pytest

from tests.hub.realtime_client import Api, unique
from tests.server import ServerProcess

pytestmark = pytest.mark.integration

OPEN_STREAM = """([url, events]) => {
    window.received = [];
    window.opens = 0;
    const source = new EventSource(url);
    source.onopen = () => { window.opens += 1; };
    for (const name of events) {
        source.addEventListener(name, (e) => window.received.push({event: name, id: e.lastEventId,
                                                                   data: JSON.parse(e.data)}));
    }
    window.source = source;
}"""


@pytest.fixture(scope="module")
def server():
    with ServerProcess(API_RATE_LIMIT=0, CLIENT_RATE_LIMIT=0) as running:
        yield running
        assert running.bad_log_lines() == []


def wait_in_page(page, expression: str, timeout: float = 20.0) -> None:
    """Poll a page value from Python: the pages' CSP forbids the eval wait_for_function would use."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => {expression}"):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def received(page, event: str) -> list[dict]:
    return [entry for entry in page.evaluate("window.received") if entry["event"] == event]


def test_eventsource_receives_and_resumes_with_last_event_id(server, open_page):
    api = Api(server)
    channel = unique("orders")
    token = api.token("ivy", [channel])
    page, log = open_page()
    page.goto(server.url + "/login")  # same origin as the stream (a page with its own icon: no 404 in the console)
    page.evaluate(OPEN_STREAM, [f"{server.url}/api/v1/stream?channel={channel}&token={token}",
                                ["tick", "signalboard:subscribed", "signalboard:disconnect"]])
    wait_in_page(page, "window.received.some(e => e.event === 'signalboard:subscribed')")
    for n in range(3):
        api.publish(channel, "tick", {"n": n})
    wait_in_page(page, "window.received.filter(e => e.event === 'tick').length === 3")
    # The server ends the stream; the browser reconnects by itself, sending the last id it got.
    assert api.post("/users/ivy/disconnect", {"reason": "test"}).json()["disconnected"] == 1
    for n in range(3, 6):
        api.publish(channel, "tick", {"n": n})
    wait_in_page(page, "window.opens >= 2")
    api.publish(channel, "tick", {"n": 6})
    wait_in_page(page, "window.received.filter(e => e.event === 'tick').length >= 7")
    ticks = received(page, "tick")
    assert [t["data"]["offset"] for t in ticks] == [1, 2, 3, 4, 5, 6, 7]
    assert [t["data"]["data"]["n"] for t in ticks] == list(range(7))
    assert ticks[-1]["id"].endswith(f";{channel}=7")
    assert [s["data"]["channels"][0]["recovered"] for s in received(page, "signalboard:subscribed")] == [False, True]
    page.evaluate("window.source.close()")
    assert token not in server.log()
    assert log.errors() == []
