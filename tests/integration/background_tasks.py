"""What the shutdown tests share: wake every background task of a real server, then read from its log which ones
started and which ones the drain saw end (utils/drain.py BackgroundTasks logs both)."""

from __future__ import annotations

import re

from tests.hub.realtime_client import Api, HubClient, unique
from tests.reliability.test_origin_and_dashboard import PASSWORD, dashboard_socket, log_in
from tests.server import ServerProcess
from utils.drain import STOP_ORDER

_LINE = re.compile(r"background task (.+?) (started|stopped|did not stop)")


def wake_every_task(server: ServerProcess) -> list[HubClient]:
    """A token that expires (token expiry), a long-poll (long-poll cap), a dashboard (sampler), a publish (fan-out
    worker), a websocket (shared loop); with REDIS_URL the first request already started the monitor and listener.
    Returns the clients, still connected, for the drain to find."""
    api = Api(server)
    channel = unique("shutdown")
    token = api.token("watcher", [channel], ttl=3600)
    websocket = HubClient(server.url).connect({"token": token})
    polling = HubClient(server.url).connect({"token": token}, transports=("polling",))
    for client in (websocket, polling):
        assert client.call("subscribe", {"channel": channel})["ok"] is True
    browser, csrf = log_in(server)
    assert dashboard_socket(server, browser, csrf, server.url, "websocket").startswith("40/dashboard,")
    assert api.post("/publish", {"channel": channel, "event": "tick", "data": 1}).status_code == 200
    websocket.wait_offsets(channel, 1)
    return [websocket, polling]


def task_lines(log: str) -> list[tuple[str, str]]:
    """(task, started|stopped|did not stop) in log order."""
    return [(m.group(1), m.group(2)) for m in _LINE.finditer(log)]


def assert_every_task_stopped(server: ServerProcess, expected: set[str]) -> None:
    """SIGTERM, then: the worker exited 0, each expected task started and was seen to end, in STOP_ORDER."""
    assert server.stop() == 0, server.log()[-3000:]
    lines = task_lines(server.log())
    started = {task for task, what in lines if what == "started"}
    stopped = [task for task, what in lines if what == "stopped"]
    assert started == expected, lines
    assert [task for task, what in lines if what == "did not stop"] == []
    assert stopped == sorted(expected, key=lambda task: STOP_ORDER.index(task.split(": ")[0])), lines
    assert server.bad_log_lines() == []


def dashboard_env() -> dict[str, object]:
    return {"DASHBOARD_PASSWORD": PASSWORD, "SESSION_COOKIE_SECURE": 0}
