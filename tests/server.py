"""Starts the real server through start.sh under real gunicorn on 127.0.0.1, and ends it by its PID."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent

TEST_ENV = {
    "SIGNALBOARD_ENV": "production",
    "SECRET_KEY": "test-secret-key-0123456789abcdef",
    "API_KEYS": "test-api-key-1-0123456789,test-api-key-2-0123456789",
    "PING_INTERVAL": "1",
    "PING_TIMEOUT": "1",
    "GUNICORN_THREADS": "64",
    "GUNICORN_GRACEFUL_TIMEOUT": "5",
    "DRAIN_NOTICE_SECONDS": "0",  # tests that need the load-balancer notice set it themselves
    "LOG_LEVEL": "INFO",
    "METRICS_PUBLIC": "1",  # tests read /readyz's figures and /metrics; the closed default has tests of its own
    # The default (PING_INTERVAL + PING_TIMEOUT) would be 2 s here: a test's request sent on a keep-alive
    # connection just as gunicorn reaps it gets a reset (the HTTP race every client meets), and a loaded machine
    # pauses tests that long. Production keeps 45 s; 30 s is clear of the 1 s ping interval either way.
    "GUNICORN_KEEPALIVE": "30",
    # Every test client comes from 127.0.0.1, so the per-address limits and the connect timeout are off here;
    # tests/reliability/test_attacks.py runs them at their defaults (EDGE_DEFAULTS) with clients on other addresses.
    "MAX_SESSIONS_PER_ADDRESS": "1000000",
    "MAX_CONNECTIONS_PER_ADDRESS": "1000000",
    "CONNECT_RATE_PER_ADDRESS": "0",
    "CONNECT_TIMEOUT_SECONDS": "0",
}

# What a clean log must never contain: error lines from any logger, raw tracebacks, or the origin's KeyError.
_BAD_LINE = re.compile(r"\[ERROR\]|\"level\": \"ERROR\"|Traceback|KeyError|Error handling request")


def bad_lines(log: str) -> list[str]:
    """The lines of a server log that a clean run must not have (also for logs read from a container)."""
    return [line for line in log.splitlines() if _BAD_LINE.search(line)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One `start.sh` run. Use as a context manager, or call start() and stop()."""

    def __init__(self, port: int | None = None, descriptor_limit: int | None = None, **env: Any) -> None:
        self.port = port or free_port()  # a given port lets a test restart "the same" server
        self.descriptor_limit = descriptor_limit  # RLIMIT_NOFILE (soft and hard) of the server process
        self.env = {**os.environ, **TEST_ENV, "HOST": "127.0.0.1", "PORT": str(self.port)}
        if {"PING_INTERVAL", "PING_TIMEOUT"} & env.keys():
            del self.env["GUNICORN_KEEPALIVE"]  # TEST_ENV's fits its own pings; with others the server derives it
        self.env.update({k: str(v) for k, v in env.items()})
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = tempfile.NamedTemporaryFile(prefix="signalboard-", suffix=".log", delete=False)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.process = subprocess.Popen(
            [str(ROOT / "start.sh")], cwd=ROOT, env=self.env,
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=self._limits,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/livez", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer /livez within {timeout}s:\n{self.log()}")

    def _limits(self) -> None:
        """In the child, before start.sh: a low descriptor limit, as a container or a default `ulimit -n` gives."""
        if self.descriptor_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.descriptor_limit, self.descriptor_limit))

    @property
    def websocket_transport(self) -> str:
        """`shared` or `threaded`, as the server under test runs it."""
        from config import SETTINGS

        default = next(s.default for s in SETTINGS if s.name == "WEBSOCKET_TRANSPORT")
        return self.env.get("WEBSOCKET_TRANSPORT", default)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pid(self) -> int:
        """The gthread worker: the only child of the gunicorn master that start.sh exec'd into."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # by PID, never by name
            return self.process.wait(timeout=5)

    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def bad_log_lines(self) -> list[str]:
        return bad_lines(self.log())

    def readyz(self) -> dict:
        """/readyz with its figures (shown with METRICS_PUBLIC=1, the test default, or the server's METRICS_TOKEN)."""
        token = self.env.get("METRICS_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + "/readyz", headers=headers, timeout=5).json()

    def wait_until(self, predicate, timeout: float = 10.0, interval: float = 0.1, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {value!r}")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self.log_file.close()
        os.unlink(self.log_file.name)


def module_server(*, clean_log: bool = True, timeout: float = 60.0, **env: Any) -> Any:
    """The `server` fixture of a test module: one real server for all its tests, with `env` over the test settings.

    With `clean_log`, the module fails at the end if the server logged an error or a traceback. Assign it in the
    module: `server = module_server(MAX_PAYLOAD_BYTES=1024)`.
    """

    @pytest.fixture(scope="module", name="server")
    def server_fixture() -> Iterator[ServerProcess]:
        running = ServerProcess(**env)
        try:
            yield running.start(timeout=timeout)
            if clean_log:
                assert running.bad_log_lines() == []
        finally:
            running.__exit__(None, None, None)

    return server_fixture


class LivezWatcher:
    """Asks /livez every few milliseconds in a thread while a test runs; records every slow or failed answer."""

    def __init__(self, server: ServerProcess, interval: float = 0.05, slow: float = 1.0,
                 session: requests.Session | None = None) -> None:
        import threading

        self.server, self.interval, self.slow = server, interval, slow
        self.session = session or requests.Session()  # one bound to another source address, for attack tests
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = self.session
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status = session.get(self.server.url + "/livez", timeout=self.slow).status_code
                if status != 200:
                    self.failures.append(f"status {status}")
            except requests.RequestException as exc:
                self.failures.append(f"{type(exc).__name__}")
            self.latencies.append(time.monotonic() - started)
            self._stop.wait(self.interval)

    def __enter__(self) -> LivezWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        assert self.latencies, "the watcher never asked /livez"
