"""What the docker tests share: commands run from the repository root, the daemon, and a compose stack per profile.

No container registry is reachable here, so the fixtures (tests/ops/conftest.py) start dockerd themselves when
none answers and build a Debian base image with debootstrap (scripts/docker_base_image.sh, cached), passed as
BASE_IMAGE. Everything they start is stopped by PID or taken down with `docker-compose down -v`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "signalboard-base:bookworm"
TAG = "test"
DEBIAN_PACKAGES = {"dockerd": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
# One run at a time per machine: runs share the daemon, the image tags and the compose projects.
LOCK_PATH = Path("/tmp/signalboard-docker-test.lock")

MARKS = [
    pytest.mark.docker,
    pytest.mark.integration,
    # Base image (cached after the first run), the builds and the stack: minutes, not the suite's default.
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


def extra_ca_certificates() -> str:
    """PEM text of locally added CAs (a TLS-intercepting network's), for pip inside the build only."""
    explicit = os.environ.get("SIGNALBOARD_BUILD_CA_FILE")
    paths = [Path(explicit)] if explicit else sorted(LOCAL_CA_DIR.rglob("*.crt"))
    return "".join(path.read_text() for path in paths)


@dataclass
class Stack:
    """One compose project with one profile: its environment, and what was measured while bringing it up."""

    project: str
    profile: str
    env: dict[str, str]
    env_file: Path
    timings: dict[str, float] = field(default_factory=dict)

    def port(self, variable: str) -> int:
        """The host port the stack publishes under the compose variable `variable` (SIGNALBOARD_PORT, ...)."""
        return int(self.env[variable])

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-p", self.project, "--env-file", str(self.env_file), "-f", "docker-compose.yaml"]
        command += ["--profile", self.profile, *args]
        return run(command, timeout=timeout, env=self.env)

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service, timeout=60).stdout.split()
        assert len(ids) == 1, f"expected one {service} container, got {ids}"
        return ids[0]

    def health(self, container: str) -> str:
        result = run(["docker", "inspect", "-f", "{{json .State.Health}}", container], timeout=30)
        return (json.loads(result.stdout) or {}).get("Status", "none")

    def wait_until_healthy(self, services: list[str], timeout: float) -> None:
        containers = {service: self.container(service) for service in services}
        deadline = time.monotonic() + timeout
        while True:
            states = {service: self.health(container) for service, container in containers.items()}
            if all(state == "healthy" for state in states.values()):
                return
            if time.monotonic() > deadline:
                logs = self.compose("logs", "--no-color", "--tail", "40", timeout=60).stdout
                pytest.fail(f"not healthy after {timeout:.0f} s: {states}\n{logs[-6000:]}")
            time.sleep(1)

    @contextmanager
    def running(self, services: list[str], build: list[str]) -> Iterator[Stack]:
        """Build `build`, start `services` (with what they depend on), wait until all are healthy; always
        `down -v` afterwards, printing what it cost."""
        self.compose("down", "-v", "--remove-orphans", timeout=120)  # leftovers of an interrupted run
        try:
            started = time.monotonic()
            self.compose("build", *build, timeout=600)
            self.timings["docker-compose build"] = time.monotonic() - started
            started = time.monotonic()
            self.compose("up", "-d", *services, timeout=300)
            self.wait_until_healthy(services, timeout=180)
            self.timings["up to all healthy"] = time.monotonic() - started
            yield self
        finally:
            started = time.monotonic()
            self.compose("down", "-v", "--remove-orphans", timeout=180)
            self.timings["down -v"] = time.monotonic() - started
            size = run(["docker", "image", "inspect", "-f", "{{.Size}}", f"signalboard:{TAG}"], timeout=30).stdout
            report = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.timings.items())
            print(f"\ndocker ({self.profile}): {report}; signalboard:{TAG} image {int(size) / 1e6:.0f} MB")


@dataclass(frozen=True)
class DockerBase:
    """A daemon that answers, the base image built, and the environment every stack under test starts from."""

    env: dict[str, str]
    env_file: Path  # empty: a developer's own .env must not change a stack under test
    base_image_seconds: float

    def stack(self, project: str, profile: str, **env: str) -> Stack:
        stack = Stack(project, profile, dict(self.env, **env), self.env_file)
        stack.timings["base image (cached or debootstrap)"] = self.base_image_seconds
        return stack
