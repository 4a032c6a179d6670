"""With REDIS_URL, SIGTERM also stops the control listener, the Redis health monitor (and presence heartbeat) and the
message-queue listener; a real redis-server, the real server under gunicorn (as in
tests/integration/test_shutdown_tasks.py)."""

from __future__ import annotations

import pytest

from tests.integration.background_tasks import assert_every_task_stopped, dashboard_env, wake_every_task
from tests.server import ServerProcess

pytestmark = [pytest.mark.scale, pytest.mark.integration]

REDIS_TASKS = {"token expiry", "control listener", "long-poll cap", "dashboard sampler", "redis health monitor",
               "message-queue listener", "shared websocket loop"}


def test_sigterm_stops_every_background_task_in_redis_mode(redis_server, key_prefix):
    server = ServerProcess(REDIS_URL=redis_server.url, REDIS_KEY_PREFIX=key_prefix, **dashboard_env())
    with server:
        server.wait_until(lambda: server.readyz()["status"] == "ready", timeout=15, what="ready with Redis")
        clients = wake_every_task(server)
        assert_every_task_stopped(server, REDIS_TASKS)
        for client in clients:
            client.disconnect()
