"""The docker tests' machine lock, daemon and base image: once per session, shared by every docker test module."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.ops.docker_stack import (
    BASE_IMAGE,
    LOCK_PATH,
    TAG,
    DockerBase,
    daemon_answers,
    extra_ca_certificates,
    install_missing_packages,
    run,
)

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def machine_lock() -> Iterator[None]:
    """Waits for another run of these tests on this machine to finish (it would take our stacks down)."""
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


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def docker_base(docker_daemon: None, tmp_path_factory: pytest.TempPathFactory) -> DockerBase:
    started = time.monotonic()
    run(["bash", "scripts/docker_base_image.sh", BASE_IMAGE], timeout=600)
    env = dict(
        os.environ,
        BASE_IMAGE=BASE_IMAGE,
        DEBIAN_BASE_IMAGE=BASE_IMAGE,
        PIP_EXTRA_CA_CERTS=extra_ca_certificates(),
        SIGNALBOARD_TAG=TAG,
        SIGNALBOARD_BIND="127.0.0.1",
        SECRET_KEY=secrets.token_urlsafe(32),
        SIGNALBOARD_ENV="production",
        ALLOW_ANONYMOUS="1",
    )
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("")
    return DockerBase(env, env_file, time.monotonic() - started)
