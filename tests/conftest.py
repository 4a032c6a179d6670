"""Shared fixtures: an in-process app for unit tests, and the real server (start.sh + gunicorn) for integration."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import ServerProcess  # noqa: E402

JS_DIR = ROOT / "tests" / "js"

UNIT_CONFIG: dict[str, Any] = {
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


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with socket.io-client installed from the npm registry (pinned by package-lock.json)."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    assert node_bin and npm_bin, "node and npm are needed for the JavaScript interop test"
    if not (JS_DIR / "node_modules" / "socket.io-client" / "package.json").exists():
        subprocess.run([npm_bin, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, timeout=300,
                       capture_output=True)
    installed = json.loads((JS_DIR / "node_modules" / "socket.io-client" / "package.json").read_text())
    assert installed["version"] == "4.8.4"
    return node_bin
