"""SIGTERM stops every background task (utils/drain.py STOP_ORDER): the real server under gunicorn, every task woken
by real clients, and the log must show each one started and then seen to end, in the stated order."""

from __future__ import annotations

import pytest

from tests.integration.background_tasks import assert_every_task_stopped, dashboard_env, wake_every_task
from tests.server import ServerProcess
from tests.webhooks.support import SECRET, Receiver

pytestmark = pytest.mark.integration

MEMORY_TASKS = {"token expiry", "long-poll cap", "dashboard sampler", "fan-out worker"}


@pytest.mark.parametrize("transport", ["shared", "threaded"])
def test_sigterm_stops_every_background_task(transport):
    server = ServerProcess(WEBSOCKET_TRANSPORT=transport, **dashboard_env())
    with server:
        clients = wake_every_task(server)
        expected = MEMORY_TASKS | ({"shared websocket loop"} if transport == "shared" else set())
        assert_every_task_stopped(server, expected)
        for client in clients:
            client.disconnect()


def test_sigterm_stops_the_webhook_outbox_and_deliverers():
    receiver = Receiver().start()
    try:
        server = ServerProcess(WEBHOOK_URLS=receiver.hook_url, WEBHOOK_SECRET=SECRET,
                               **dashboard_env())
        with server:
            clients = wake_every_task(server)  # connects and subscriptions raise lifecycle events
            receiver.wait_events(lambda events: len(events) > 0, what="a delivered batch (a POST ran)")
            loop = {"shared websocket loop"} if server.websocket_transport == "shared" else set()
            assert_every_task_stopped(server, MEMORY_TASKS | loop | {"webhook outbox", "outbound deadlines",
                                                                     f"webhook deliverer: {receiver.hook_url}"})
            for client in clients:
                client.disconnect()
    finally:
        receiver.close()
