"""Real redis-server and nginx (Debian packages) on free 127.0.0.1 ports, with their own temp config, ended by PID."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.server import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def _end(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@contextmanager
def running_instances(servers: list[ServerProcess]) -> Iterator[list[ServerProcess]]:
    """Start every server, wait until all are ready, and end them all (their logs clean) afterwards."""
    try:
        for server in servers:
            server.start(timeout=60)
        for server in servers:
            server.wait_until(lambda s=server: requests.get(s.url + "/readyz", timeout=5).status_code == 200,
                              timeout=20, what="readiness")
        yield servers
        for server in servers:
            assert server.bad_log_lines() == [], server.log()[-3000:]
    finally:
        for server in servers:
            server.__exit__(None, None, None)


class RedisProcess:
    """One redis-server; `durable` turns AOF on with fsync always, so a restart keeps every acknowledged write."""

    def __init__(self, durable: bool = True) -> None:
        self.durable = durable
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="signalboard-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        with (self.dir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--save", "", "--protected-mode", "yes",
                 *(["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"])],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _wait_for_port(self.port, self.process, "redis-server")
        return self

    def stop(self) -> None:
        _end(self.process)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class NginxProcess:
    """nginx in the foreground with a config generated from deploy/nginx.conf for the given upstream ports."""

    def __init__(self, upstream_ports: list[int], balance: str | None = None, limits: bool = True) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="signalboard-nginx-"))
        self.upstream_ports = upstream_ports
        # Replaces `ip_hash;` when set: on one machine every client is 127.0.0.1, so ip_hash sends them all to
        # one instance; a benchmark of websocket-only clients can balance per connection instead.
        self.balance = balance
        # False drops deploy/nginx.conf's per-address limits: a benchmark's thousands of clients all come from one
        # loopback address.
        self.limits = limits
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        """deploy/nginx.conf's server and upstream blocks, pointed at the test instances, in a minimal main context."""
        site = (ROOT / "deploy" / "nginx.conf").read_text()
        servers = "".join(f"    server 127.0.0.1:{port};\n" for port in self.upstream_ports)
        site, found = re.subn(r"(upstream signalboard \{\n(?:\s*#.*\n)*\s*ip_hash;\n)(?:\s*server [^\n]+\n)+",
                              lambda m: m.group(1) + servers, site)
        assert found == 1, "deploy/nginx.conf no longer has the upstream block this test rewrites"
        site, found = re.subn(r"listen \d+;", f"listen 127.0.0.1:{self.port};", site)
        assert found == 1
        if self.balance:
            site = site.replace("    ip_hash;\n", f"    {self.balance};\n", 1)
        if not self.limits:
            site, found = re.subn(r"\n\s*limit_(?:conn|req) [^\n]*;", "", site)
            assert found, "deploy/nginx.conf no longer has the limits this option removes"
        return (
            "worker_processes 1;\n"
            f"pid {self.dir}/nginx.pid;\n"
            f"error_log {self.dir}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            f"  access_log off;\n"
            f"  client_body_temp_path {self.dir}/body;\n  proxy_temp_path {self.dir}/proxy;\n"
            f"  fastcgi_temp_path {self.dir}/fastcgi;\n  uwsgi_temp_path {self.dir}/uwsgi;\n"
            f"  scgi_temp_path {self.dir}/scgi;\n"
            f"{site}\n}}\n"
        )

    def start(self) -> NginxProcess:
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        with (self.dir / "stdout.log").open("ab") as log:
            self.process = subprocess.Popen(
                [NGINX, "-p", str(self.dir), "-c", str(conf), "-g", "daemon off;"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _wait_for_port(self.port, self.process, "nginx")
        return self

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        # SIGQUIT is nginx's graceful stop; the master ends its workers itself.
        _end(self.process, signal.SIGQUIT)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
