"""Builds the real image and runs the compose stack (web, and the scale profile's Redis, instances and nginx).

No container registry is reachable here, so the test starts dockerd itself when none answers, builds a Debian base
image with debootstrap (scripts/docker_base_image.sh, cached) and passes it as BASE_IMAGE. Everything it starts is
stopped by PID or taken down with `docker-compose down -v`. SIGNALBOARD_SKIP_DOCKER=1 skips it, saying so.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import socketio

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "signalboard-base:bookworm"
PROJECT = "signalboard-test"
TAG = "test"
DEBIAN_PACKAGES = {"dockerd": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
# One run at a time per machine: runs share the daemon, the image tags and the compose project.
LOCK_PATH = Path("/tmp/signalboard-docker-test.lock")

pytestmark = [
    pytest.mark.docker,
    pytest.mark.integration,
    # Base image (cached after the first run), three builds and the stack: minutes, not the suite's default.
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        os.environ.get("SIGNALBOARD_SKIP_DOCKER") == "1",
        reason="SIGNALBOARD_SKIP_DOCKER=1: Docker image build and compose run skipped on request",
    ),
]


def run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root; a failure shows its output.

    The command gets its own process group, so a timeout ends its children too (debootstrap, docker-compose's
    builds): first SIGTERM, which lets scripts run their cleanup traps, then SIGKILL.
    """
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        pytest.fail(f"{' '.join(command[:4])} did not finish within {timeout:.0f} s")
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert result.returncode == 0, f"{' '.join(command[:4])} failed:\n{stdout[-4000:]}\n{stderr[-4000:]}"
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def install_missing_packages() -> None:
    missing = sorted({pkg for cmd, pkg in DEBIAN_PACKAGES.items() if shutil.which(cmd) is None})
    if not missing:
        return
    assert os.geteuid() == 0, f"install {' '.join(missing)} (or set SIGNALBOARD_SKIP_DOCKER=1 to skip)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], timeout=300, env=env)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], timeout=600, env=env)


def daemon_answers() -> bool:
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return result.returncode == 0


@pytest.fixture(scope="module")
def machine_lock() -> Iterator[None]:
    """Waits for another run of these tests on this machine to finish (it would take our stack down)."""
    with LOCK_PATH.open("w") as lock:
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"another docker test run held {LOCK_PATH} for 600 s"
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def docker_daemon(machine_lock: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Docker daemon: the one already running, or one started here and stopped by its PID afterwards."""
    install_missing_packages()
    if daemon_answers():
        yield
        return
    log_path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log_path.open("wb") as log_file:
        daemon = subprocess.Popen(["dockerd"], stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    log.info("started dockerd, pid %d, log %s", daemon.pid, log_path)
    try:
        deadline = time.monotonic() + 60
        while not daemon_answers():
            assert daemon.poll() is None, f"dockerd exited with {daemon.returncode}:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"dockerd did not answer within 60 s:\n{log_path.read_text()[-4000:]}"
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)


def extra_ca_certificates() -> str:
    """PEM text of locally added CAs (a TLS-intercepting network's), for pip inside the build only."""
    explicit = os.environ.get("SIGNALBOARD_BUILD_CA_FILE")
    paths = [Path(explicit)] if explicit else sorted(LOCAL_CA_DIR.rglob("*.crt"))
    return "".join(path.read_text() for path in paths)


@dataclass
class Stack:
    """The compose stack under test: its environment, ports and what was measured while bringing it up."""

    env: dict[str, str]
    env_file: Path
    web_port: int
    proxy_port: int
    extra_ca: str
    timings: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-p", PROJECT, "--env-file", str(self.env_file), "-f", "docker-compose.yaml"]
        command += ["--profile", "scale", *args]
        return run(command, timeout=timeout, env=self.env)

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service, timeout=60).stdout.split()
        assert len(ids) == 1, f"expected one {service} container, got {ids}"
        return ids[0]

    def health(self, container: str) -> str:
        result = run(["docker", "inspect", "-f", "{{json .State.Health}}", container], timeout=30)
        return (json.loads(result.stdout) or {}).get("Status", "none")


@pytest.fixture(scope="module")
def stack(docker_daemon: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = time.monotonic()
    run(["bash", "scripts/docker_base_image.sh", BASE_IMAGE], timeout=600)
    base_seconds = time.monotonic() - started
    env = dict(
        os.environ,
        BASE_IMAGE=BASE_IMAGE,
        DEBIAN_BASE_IMAGE=BASE_IMAGE,
        PIP_EXTRA_CA_CERTS=extra_ca_certificates(),
        SIGNALBOARD_TAG=TAG,
        SIGNALBOARD_BIND="127.0.0.1",
        SIGNALBOARD_PORT=str(free_port()),
        SIGNALBOARD_PROXY_PORT=str(free_port()),
        SECRET_KEY=secrets.token_urlsafe(32),
        SIGNALBOARD_ENV="production",
        ALLOW_ANONYMOUS="1",
    )
    # An empty env file: a developer's own .env must not change the stack under test.
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("")
    ports = int(env["SIGNALBOARD_PORT"]), int(env["SIGNALBOARD_PROXY_PORT"])
    stack = Stack(env, env_file, *ports, extra_ca=env["PIP_EXTRA_CA_CERTS"])
    stack.timings["base image (cached or debootstrap)"] = base_seconds
    stack.compose("down", "-v", "--remove-orphans", timeout=120)  # leftovers of an interrupted run
    try:
        started = time.monotonic()
        stack.compose("build", timeout=600)
        stack.timings["docker-compose build"] = time.monotonic() - started
        started = time.monotonic()
        stack.compose("up", "-d", timeout=300)
        wait_until_healthy(stack, ["web", "proxy", "redis", "web-1", "web-2", "nginx"], timeout=180)
        stack.timings["up to all healthy"] = time.monotonic() - started
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", timeout=180)
        size = run(["docker", "image", "inspect", "-f", "{{.Size}}", f"signalboard:{TAG}"], timeout=30).stdout
        report = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stack.timings.items())
        print(f"\ndocker: {report}; signalboard:{TAG} image {int(size) / 1e6:.0f} MB")


def wait_until_healthy(stack: Stack, services: list[str], timeout: float) -> None:
    containers = {service: stack.container(service) for service in services}
    deadline = time.monotonic() + timeout
    while True:
        states = {service: stack.health(container) for service, container in containers.items()}
        if all(state == "healthy" for state in states.values()):
            return
        if time.monotonic() > deadline:
            logs = stack.compose("logs", "--no-color", "--tail", "40", timeout=60).stdout
            pytest.fail(f"not healthy after {timeout:.0f} s: {states}\n{logs[-6000:]}")
        time.sleep(1)


def connect(url: str, transports: list[str] | None) -> socketio.Client:
    client = socketio.Client(reconnection=False)
    client.connect(url, transports=transports, wait_timeout=10)
    return client


def test_livez_answers_on_the_published_port(stack: Stack) -> None:
    response = requests.get(f"http://127.0.0.1:{stack.web_port}/livez", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], None], ids=["polling", "websocket", "upgrade"])
@pytest.mark.parametrize("through", ["proxy", "nginx"])
def test_socketio_client_connects_through_the_published_ports(
    stack: Stack, through: str, transports: list[str] | None
) -> None:
    # Through nginx (the default stack's proxy, the scale profile's nginx), a websocket only opens if the Upgrade and
    # Connection headers are forwarded.
    port = stack.web_port if through == "proxy" else stack.proxy_port
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
    for block in stack.extra_ca.split("-----END CERTIFICATE-----"):
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
    assert f"127.0.0.1:{stack.web_port}:8080/tcp" in resolved  # the default stack's nginx
    assert f"127.0.0.1:{stack.proxy_port}:8080/tcp" in resolved
    assert ":5000/tcp" not in resolved  # no instance is published: only nginx faces the network
