"""A subscriber that stops reading (its TCP window full) must not hold up the others or grow the server's memory
without bound: its outgoing backlog is capped, it is disconnected, and the disconnect is counted in /metrics."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests

from tests.eio import PollingSession
from tests.reliability.support import Api, Bystanders, Figures, RawSocketIO, running_server

pytestmark = pytest.mark.integration

SEND_BUFFER = 65536  # WEBSOCKET_SEND_BUFFER's minimum
MESSAGES = 600
PAYLOAD = "x" * 16_000  # 9.6 MB in all: past the kernel's socket buffers (autotuned up to 4 MB) and the cap
RESULTS: dict[str, dict] = {}


def disconnects(server, reason: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    match = re.search(rf'signalboard_socketio_disconnects_total\{{reason="{reason}"\}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def publish_flood(api: Api, channel: str, bystanders: Bystanders) -> None:
    """MESSAGES big messages to `channel` in batches; the bystanders get each of their own in time meanwhile."""
    for first in range(0, MESSAGES, 100):
        batch = [{"channel": channel, "event": "tick", "data": {"n": n, "pad": PAYLOAD}}
                 for n in range(first, first + 100)]
        response = api.post("/publish/batch", {"messages": batch})
        assert response.status_code == 200, response.status_code
        bystanders.check(1, timeout=10)


@pytest.mark.parametrize("transport", ["shared", "threaded"])
def test_stalled_subscriber_is_dropped_and_others_unaffected(transport):
    with running_server(WEBSOCKET_TRANSPORT=transport, WEBSOCKET_SEND_BUFFER=SEND_BUFFER,
                        # long pings: only the cap may drop it (and a keep-alive clear of them)
                        PING_INTERVAL=25, PING_TIMEOUT=20) as server:
        api = Api(server)
        bystanders = Bystanders(server, api)
        figures = Figures(server)
        before = figures.read()
        dropped_before = disconnects(server, "slow_consumer")
        flood = bystanders.channel + ".flood"
        slow = RawSocketIO(server.port, api.token("slow", [flood]), receive_buffer=4096)
        assert slow.call(1, "subscribe", {"channel": flood})["ok"] is True
        # From here on the slow client never reads again; the bystanders keep getting their own channel meanwhile.
        started = time.monotonic()
        publish_flood(api, flood, bystanders)
        delivered_in = time.monotonic() - started
        server.wait_until(lambda: figures.read()["sessions"] == 2, timeout=20, what="the stalled client dropped")
        during = figures.read()
        assert "dropped as a slow consumer" in server.log()
        assert disconnects(server, "slow_consumer") == dropped_before + 1
        assert during["rss_mib"] - before["rss_mib"] <= 40, (before, during)  # 9.6 MB sent; nothing kept per message
        RESULTS[transport] = {"messages": MESSAGES, "bytes": MESSAGES * len(PAYLOAD), "seconds": round(delivered_in, 1),
                              "before": before, "after": during}
        print(f"slow consumer {transport}: {RESULTS[transport]}")
        slow.close()
        bystanders.check(2)
        bystanders.close()
        assert server.bad_log_lines() == []


@pytest.mark.parametrize("transport", ["shared", "threaded"])
def test_polling_subscriber_that_stops_polling_is_dropped(transport):
    """Its packets wait in the Engine.IO queue, not a socket: the same bound applies there."""
    with running_server(WEBSOCKET_TRANSPORT=transport, WEBSOCKET_SEND_BUFFER=SEND_BUFFER,
                        PING_INTERVAL=25, PING_TIMEOUT=20) as server:
        api = Api(server)
        bystanders = Bystanders(server, api)
        dropped_before = disconnects(server, "slow_consumer")
        flood = bystanders.channel + ".flood"
        session = PollingSession(server.url)
        session.post("40" + json.dumps({"token": api.token("slow", [flood])}))
        assert session.get().text.startswith("40")
        session.post("421" + json.dumps(["subscribe", {"channel": flood}]))
        assert json.loads(session.get().text[3:])[0]["ok"] is True  # the ack; it never polls again
        publish_flood(api, flood, bystanders)
        server.wait_until(lambda: disconnects(server, "slow_consumer") == dropped_before + 1, timeout=20,
                          what="the stalled polling client dropped as a slow consumer")
        assert "dropped as a slow consumer" in server.log()
        assert session.get().status_code == 400  # its session is gone
        bystanders.check(2)
        bystanders.close()
        assert server.bad_log_lines() == []
