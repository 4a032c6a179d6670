"""Start, probe and stop the servers the benchmark compares, and read their cost from /proc.

Every server runs on 127.0.0.1 on a free port, logs to a file, and is ended by its PID (then any
surviving process of its tree, also by PID).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VENV_BIN = REPO_DIR / ".venv" / "bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_API_KEY = "bench-api-key-0123456789abcdef"
BENCH_CHANNEL = "bench"


def raise_fd_limit() -> None:
    """Thousands of sockets on each side: lift the soft descriptor limit (inherited by the servers we start)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, found through the ppid field of /proc/<pid>/stat."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of every live process in the tree."""
    total = 0
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / CLK_TCK


def tree_status(pid: int) -> dict[str, int]:
    """Summed VmRSS (KiB) and Threads of every process in the tree."""
    rss = threads = 0
    for p in process_tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("Threads:"):
                threads += int(line.split()[1])
    return {"rss_kib": rss, "threads": threads}


def http_request(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json"} if payload is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=payload, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Queue(Protocol):
    """A process the servers share (tests/scale/processes.py's RedisProcess): its CPU is reported apart."""

    process: subprocess.Popen | None

    def close(self) -> None: ...


@dataclass
class Server:
    """A running server under test; with `peers`, the first of several instances sharing `queue` (Redis mode):
    clients are split over all of them, publishes go to this one, and CPU, RSS and threads are summed."""

    name: str
    kind: str  # "stock", "node" or "signalboard"
    port: int
    proc: subprocess.Popen
    log_path: Path
    workdir: Path
    publish_path: str
    publish_headers: dict[str, str] = field(default_factory=dict)
    auth: dict[str, Any] | None = None
    subscribe: str | None = BENCH_CHANNEL
    has_publish_api: bool = True
    peers: list[Server] = field(default_factory=list)
    queue: Queue | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def members(self) -> list[Server]:
        return [self, *self.peers]

    @property
    def ports(self) -> list[int]:
        return [m.port for m in self.members]

    def processes(self) -> set[int]:
        return {p for m in self.members for p in process_tree(m.pid)}

    def cpu_seconds(self) -> float:
        return sum(tree_cpu_seconds(m.pid) for m in self.members)

    def status(self) -> dict[str, int]:
        every = [tree_status(m.pid) for m in self.members]
        return {key: sum(s[key] for s in every) for key in ("rss_kib", "threads")}

    def queue_cpu_seconds(self) -> float | None:
        return tree_cpu_seconds(self.queue.process.pid) if self.queue and self.queue.process else None

    def publish_body(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "signalboard":
            return {"channel": BENCH_CHANNEL, "event": event, "data": data}
        return {"event": event, "data": data}

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL after timeout, then kill any survivor of the tree by PID."""
        tree = process_tree(self.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for p in tree[1:]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)
        for peer in self.peers:
            peer.stop(timeout)
        if self.queue is not None:
            self.queue.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            status, _ = http_request(server.port, "GET", "/livez", timeout=1.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} not ready after {timeout}s:\n{server.log_tail()}")


def _spawn(name: str, kind: str, cmd: list[str], env: dict[str, str], cwd: Path, **kw: Any) -> Server:
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    log_path = workdir / "server.log"
    port = int(env["PORT"])
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(name=name, kind=kind, port=port, proc=proc, log_path=log_path, workdir=workdir, **kw)
    _wait_ready(server, 90)  # generous: the shared machine can be very busy
    log.info("started %s pid=%d port=%d", name, server.pid, port)
    return server


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN", "PING_", "API_KEYS", "ALLOW_"))}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def start_stock(threads: int, worker_connections: int = 1000) -> Server:
    """The stock Flask-SocketIO anchor under gunicorn gthread, one worker."""
    port = free_port()
    env = _base_env() | {"PORT": str(port)}
    cmd = [
        str(VENV_BIN / "gunicorn"),
        "--worker-class", "gthread",
        "--workers", "1",
        "--threads", str(threads),
        "--worker-connections", str(worker_connections),
        "--bind", f"127.0.0.1:{port}",
        "--log-level", "warning",
        "--chdir", str(BENCH_DIR / "anchors"),
        "stock_flask_socketio:app",
    ]  # fmt: skip
    return _spawn(f"stock-t{threads}", "stock", cmd, env, BENCH_DIR, publish_path="/broadcast")


def start_node(port: int | None = None, redis_url: str | None = None) -> Server:
    """The reference Node.js Socket.IO server (needs `npm ci` in bench/), on `port` or a free one; with `redis_url`,
    through @socket.io/redis-adapter (several instances sharing that Redis)."""
    if not (BENCH_DIR / "node_modules" / "@socket.io" / "redis-adapter").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH_DIR, check=True, timeout=300)
    port = port or free_port()
    env = _base_env() | {"PORT": str(port)} | ({"REDIS_URL": redis_url} if redis_url else {})
    cmd = ["node", str(BENCH_DIR / "anchors" / "node_server.js"), str(port), "127.0.0.1"]
    return _spawn("node", "node", cmd, env, BENCH_DIR, publish_path="/broadcast")


def signalboard_available() -> bool:
    return (REPO_DIR / "start.sh").is_file() and (REPO_DIR / "app.py").is_file()


def start_signalboard(extra_env: dict[str, str] | None = None, repo: Path = REPO_DIR,
                      name: str = "signalboard") -> Server:
    """Signalboard through its own start.sh, with its defaults unless extra_env overrides them; `repo`: another
    checkout (an older commit, to measure before and after in one run)."""
    port = free_port()
    env = _base_env() | {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
        "API_KEYS": BENCH_API_KEY,
        "ALLOW_ANONYMOUS": "1",
        "METRICS_PUBLIC": "1",  # the benchmarks read /readyz's figures
        # Every benchmark client comes from 127.0.0.1: the per-address limits (one NAT's worth) would refuse them.
        "CONNECT_RATE_PER_ADDRESS": "0",
        "MAX_SESSIONS_PER_ADDRESS": "1000000",
        "MAX_CONNECTIONS_PER_ADDRESS": "100000",
    }
    env |= extra_env or {}
    server = _spawn(
        name,
        "signalboard",
        ["bash", str(repo / "start.sh")],
        env,
        repo,
        publish_path="/api/v1/publish",
        publish_headers={"Authorization": f"Bearer {BENCH_API_KEY}"},
    )
    server.auth = _signalboard_auth(server)
    if not server.has_publish_api:
        # The hub (issue 3) is not there yet: clients can connect but there is nothing to subscribe to.
        server.subscribe = None
    return server


def _signalboard_auth(server: Server) -> dict[str, Any] | None:
    """A connection token for the bench channel; anonymous access (ALLOW_ANONYMOUS=1) if minting fails."""
    try:
        status, body = http_request(
            server.port,
            "POST",
            "/api/v1/tokens",
            {"sub": "bench", "channels": [BENCH_CHANNEL], "ttl": 3600},
            headers=server.publish_headers,
        )
    except OSError as exc:
        log.warning("token request failed (%s); connecting anonymously", exc)
        return None
    if status == 404:
        server.has_publish_api = False
    if status // 100 != 2:
        log.warning("token request answered %d %s; connecting anonymously", status, body[:200])
        return None
    return {"token": json.loads(body)["token"]}
