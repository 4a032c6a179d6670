"""Real redis-server, redis-sentinel and nginx (Debian packages) on free 127.0.0.1 ports, with their own temp config,
ended by PID."""

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

import redis
import requests

from tests.server import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"  # Debian's redis-sentinel package
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
            # The offending lines first: the server's log file is gone once the test ends.
            assert server.bad_log_lines() == [], (server.bad_log_lines()[:10], server.log()[-3000:])
    finally:
        for server in servers:
            server.__exit__(None, None, None)


class RedisProcess:
    """One redis-server; `durable` turns AOF on with fsync always, so a restart keeps every acknowledged write."""

    def __init__(self, durable: bool = True, extra: tuple[str, ...] = ()) -> None:
        self.durable = durable
        self.extra = extra  # more redis-server options, e.g. ("--replicaof", "127.0.0.1", "6379")
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
                 *(["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]),
                 *self.extra],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _wait_for_port(self.port, self.process, "redis-server")
        return self

    def stop(self) -> None:
        _end(self.process)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: what a crashed host looks like (nothing flushed, no goodbye to replicas)."""
        _end(self.process, signal.SIGKILL)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: a host that hangs (replication to it stops; it answers nobody) until resume()."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None:
            self.resume()  # a stopped process would ignore SIGTERM until continued
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


SENTINEL_SERVICE = "signalboard"


class SentinelProcess:
    """One `redis-sentinel` watching `master_port` with a quorum of 2 and short failure timings."""

    def __init__(self, master_port: int, down_after_ms: int = 1000, failover_timeout_ms: int = 3000) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="signalboard-sentinel-"))
        self.master_port = master_port
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.process: subprocess.Popen | None = None

    def start(self) -> SentinelProcess:
        conf = self.dir / "sentinel.conf"  # Sentinel rewrites its own config: a file of its own, writable
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
        )
        with (self.dir / "sentinel.log").open("ab") as log:
            self.process = subprocess.Popen([REDIS_SENTINEL, str(conf)], stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for_port(self.port, self.process, "redis-sentinel")
        return self

    def log(self) -> str:
        path = self.dir / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        _end(self.process)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelCluster:
    """A master, `replicas` replicas and three Sentinels on 127.0.0.1; `url` is the redis+sentinel:// URL to use."""

    def __init__(self, replicas: int = 1) -> None:
        self.master = RedisProcess(durable=False)
        self.replica_count = replicas
        self.replicas: list[RedisProcess] = []
        self.sentinels: list[SentinelProcess] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/0/{SENTINEL_SERVICE}"

    @property
    def servers(self) -> list[RedisProcess]:
        return [self.master, *self.replicas]

    def start(self) -> SentinelCluster:
        self.master.start()
        self.replicas = [RedisProcess(durable=False, extra=("--replicaof", "127.0.0.1", str(self.master.port))).start()
                         for _ in range(self.replica_count)]
        wait_replicas(self.master.port, self.replica_count)
        self.sentinels = [SentinelProcess(self.master.port).start() for _ in range(3)]
        wait_until(lambda: all(self._sentinel_sees(s) for s in self.sentinels), 30, "the Sentinels to agree")
        return self

    def _sentinel_sees(self, sentinel: SentinelProcess) -> bool:
        master = redis_cli(sentinel.port, "SENTINEL", "MASTER", SENTINEL_SERVICE).splitlines()
        fields = dict(zip(master[::2], master[1::2], strict=False))
        return (int(fields.get("num-other-sentinels", 0)) >= 2
                and int(fields.get("num-slaves", 0)) >= self.replica_count)

    def server_on(self, port: int) -> RedisProcess:
        return next(server for server in self.servers if server.port == port)

    def master_port(self) -> int:
        """The port the Sentinels name as master now."""
        answer = redis_cli(self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
        return int(answer.split()[1])

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers:
            server.close()


REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def wait_until(predicate, timeout: float, what: str) -> None:
    """Poll `predicate` (a redis-cli answer not there yet counts as False) until true, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def redis_info(port: int, section: str) -> dict[str, str]:
    lines = redis_cli(port, "INFO", section).splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))


def wait_replicas(master_port: int, count: int, timeout: float = 20) -> None:
    """Until `count` replicas are connected to the master on `master_port`, online, and confirming writes (a write and
    a WAIT on one connection, what the server's publishes do). `state=online` alone comes once the master has sent its
    snapshot, possibly before the replica has loaded it and can acknowledge, and a publish's WAIT then timed out
    (refused 503 in a CI run)."""
    probe = redis.Redis(port=master_port, socket_timeout=5)

    def synced() -> bool:
        info = redis_info(master_port, "replication")
        replicas = [v for k, v in info.items() if re.fullmatch(r"slave\d+", k)]
        if len(replicas) < count or not all(",state=online," in v for v in replicas):
            return False
        probe.set("signalboard-test:replicated", time.time())
        return int(probe.execute_command("WAIT", count, 100)) >= count

    try:
        wait_until(synced, timeout, "the replica to be in sync")
    finally:
        probe.close()


def redis_cli(port: int, *args: str) -> str:
    """One command through redis-cli (the Debian tool), as an operator would type it."""
    done = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=5, check=False)
    if done.returncode != 0:
        raise OSError(done.stderr.strip() or f"redis-cli exited with {done.returncode}")
    return done.stdout


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
