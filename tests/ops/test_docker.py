"""Builds the real image and runs the compose stack (web, and the scale profile's Redis, instances and nginx).

The daemon, base image and stack helpers are tests/ops/conftest.py's and docker_stack.py's (shared with
test_docker_ha.py). SIGNALBOARD_SKIP_DOCKER=1 skips it, saying so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import socketio

from tests.ops.docker_stack import MARKS, ROOT, TAG, DockerBase, Stack, install_missing_packages, run
from tests.server import free_port

PROJECT = "signalboard-test"

pytestmark = MARKS


@pytest.fixture(scope="module")
def stack(docker_base: DockerBase) -> Iterator[Stack]:
    stack = docker_base.stack(PROJECT, "scale", SIGNALBOARD_PORT=str(free_port()),
                              SIGNALBOARD_PROXY_PORT=str(free_port()))
    with stack.running(["web", "proxy", "redis", "web-1", "web-2", "nginx"], build=[]):
        yield stack


def connect(url: str, transports: list[str] | None) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    client.connect(url, transports=transports, wait_timeout=10)
    return client


def test_livez_answers_on_the_published_port(stack: Stack) -> None:
    response = requests.get(f"http://127.0.0.1:{stack.port('SIGNALBOARD_PORT')}/livez", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], None], ids=["polling", "websocket", "upgrade"])
@pytest.mark.parametrize("through", ["proxy", "nginx"])
def test_socketio_client_connects_through_the_published_ports(
    stack: Stack, through: str, transports: list[str] | None
) -> None:
    # Through nginx (the default stack's proxy, the scale profile's nginx), a websocket only opens if the Upgrade and
    # Connection headers are forwarded.
    port = stack.port("SIGNALBOARD_PORT") if through == "proxy" else stack.port("SIGNALBOARD_PROXY_PORT")
    client = connect(f"http://127.0.0.1:{port}", transports)
    try:
        assert client.connected
        assert client.transport() == (transports or ["websocket"])[0]
    finally:
        client.disconnect()


def test_server_runs_as_the_fixed_non_root_user(stack: Stack) -> None:
    uid = stack.compose("exec", "-T", "web", "id", "-u", timeout=60).stdout.strip()
    assert uid == "10001"
    config = json.loads(run(["docker", "image", "inspect", f"signalboard:{TAG}"], timeout=30).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "python"]


def test_build_ca_is_not_left_in_the_image(stack: Stack) -> None:
    trust_store = stack.compose("exec", "-T", "web", "cat", "/etc/ssl/certs/ca-certificates.crt", timeout=60).stdout
    assert "BEGIN CERTIFICATE" in trust_store
    for block in stack.env["PIP_EXTRA_CA_CERTS"].split("-----END CERTIFICATE-----"):
        body = block.split("-----BEGIN CERTIFICATE-----")[-1].strip()
        if body:
            assert body not in trust_store
    history = run(["docker", "history", "--no-trunc", f"signalboard:{TAG}"], timeout=30).stdout
    assert "BEGIN CERTIFICATE" not in history
    assert "PIP_EXTRA_CA_CERTS" not in history


@pytest.mark.parametrize("service, upstreams", [("proxy", ["web:5000"]), ("nginx", ["web-1:5000", "web-2:5000"])])
def test_nginx_accepts_its_configuration(stack: Stack, service: str, upstreams: list[str]) -> None:
    result = stack.compose("exec", "-T", service, "nginx", "-t", timeout=60)
    assert "test is successful" in result.stdout + result.stderr
    config = stack.compose("exec", "-T", service, "cat", "/etc/nginx/conf.d/signalboard.conf", timeout=60).stdout
    assert re.findall(r"^    server (\S+);$", config, re.M) == upstreams


def test_compose_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    install_missing_packages()
    empty_env_file = tmp_path / "empty.env"  # a developer's own .env must not supply the key here
    empty_env_file.write_text("")
    env = {name: value for name, value in os.environ.items() if name != "SECRET_KEY"}
    command = ["docker-compose", "--env-file", str(empty_env_file), "-f", "docker-compose.yaml", "config"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "set SECRET_KEY" in result.stderr


def test_compose_publishes_on_the_requested_address_and_port(stack: Stack) -> None:
    resolved = stack.compose("config", timeout=60).stdout
    assert f"127.0.0.1:{stack.port('SIGNALBOARD_PORT')}:8080/tcp" in resolved  # the default stack's nginx
    assert f"127.0.0.1:{stack.port('SIGNALBOARD_PROXY_PORT')}:8080/tcp" in resolved
    assert ":5000/tcp" not in resolved  # no instance is published: only nginx faces the network
