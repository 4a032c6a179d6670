"""Shared fixtures: an in-process app for unit tests, and the real server (start.sh + gunicorn) for integration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import ServerProcess  # noqa: E402

UNIT_CONFIG = {
    "SIGNALBOARD_ENV": "production",
    "SECRET_KEY": "unit-test-secret-key-0123456789",
    "API_KEYS": ("unit-test-api-key-0001",),
    "ALLOW_ANONYMOUS": True,  # the in-process Socket.IO test clients connect without a token
    "METRICS_PUBLIC": True,  # tests read /readyz's figures; the closed default has tests of its own
    "TESTING": True,
}


@pytest.fixture
def app():
    from app import create_app

    return create_app(UNIT_CONFIG)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def server_factory():
    """Start as many real servers as a test needs, with extra environment; every one is stopped by PID."""
    started: list[ServerProcess] = []

    def start(**env) -> ServerProcess:
        server = ServerProcess(**env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def server(server_factory):
    """A real server with test settings (1 s pings, 64 threads)."""
    return server_factory()
