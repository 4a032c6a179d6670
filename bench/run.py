"""One command for the whole benchmark: Signalboard beside its anchors, written to docs/bench-report.{md,json}.

    python bench/run.py            # full run: 100/500/1000 clients, 3 repetitions, capacity ramps
    python bench/run.py --quick    # a few minutes: fewer clients, messages and steps, 1 repetition

Every server is started fresh for each measurement on 127.0.0.1 and ended by PID. The machine is shared and
noisy, so the ratios between servers measured in the same run are the figures that count.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import capacity  # noqa: E402
import servers  # noqa: E402
from loadgen import SEND_TS_KEY, LoadGen, percentile  # noqa: E402

log = logging.getLogger("bench.run")

STOCK_BIG_THREADS = 1100  # "enough threads to hold the load": 1000 clients plus room for plain HTTP


class Publisher:
    """Publishes numbered, timestamped events over one keep-alive HTTP connection."""

    def __init__(self, server: servers.Server) -> None:
        self.server = server
        self.conn: http.client.HTTPConnection | None = None
        self.call_ms: list[float] = []
        self.errors: dict[str, int] = {}

    def publish(self, seq: int) -> None:
        data = {SEND_TS_KEY: time.time(), "bench_seq": seq}
        body = json.dumps(self.server.publish_body("tick", data)).encode()
        headers = {"Content-Type": "application/json"} | self.server.publish_headers
        for attempt in (1, 2):  # one retry on a fresh connection if the server closed the idle one
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
            t0 = time.perf_counter()
            try:
                self.conn.request("POST", self.server.publish_path, body=body, headers=headers)
                resp = self.conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    self._error(exc.__class__.__name__)
                continue
            self.call_ms.append((time.perf_counter() - t0) * 1e3)
            if resp.status // 100 != 2:
                self._error(f"HTTP {resp.status}")
            if resp.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            return

    def _error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class LivezSampler(threading.Thread):
    """Times GET /livez in the background while the broadcasts run: each on a new connection (as a health checker
    does: it waits in the listen backlog with every other connect), or with `kept_alive` on one connection kept
    open (the server's own answer time, without the backlog)."""

    def __init__(self, port: int, interval: float = 0.02, kept_alive: bool = False) -> None:
        super().__init__(daemon=True)
        self.port, self.interval, self.kept_alive = port, interval, kept_alive
        self.latencies: list[float] = []
        self.failures = 0
        self.stopping = threading.Event()

    def _get(self, conn: http.client.HTTPConnection | None) -> int:
        if conn is None:
            return servers.http_request(self.port, "GET", "/livez", timeout=5)[0]
        conn.request("GET", "/livez")
        resp = conn.getresponse()
        resp.read()
        return resp.status

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5) if self.kept_alive else None
        while not self.stopping.is_set():
            t0 = time.perf_counter()
            try:
                ok = self._get(conn) == 200
            except (OSError, http.client.HTTPException):
                ok = False
                if conn is not None:
                    conn.close()  # the next request connects again
            if ok:
                self.latencies.append((time.perf_counter() - t0) * 1e3)
            else:
                self.failures += 1
            self.stopping.wait(self.interval)
        if conn is not None:
            conn.close()

    def stop(self) -> dict[str, Any]:
        self.stopping.set()
        self.join(10)
        lat = sorted(self.latencies)
        return {
            "count": len(lat),
            "failures": self.failures,
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
        }


def _latency_stats(col: dict[str, Any], expected: int) -> dict[str, Any]:
    lat = col["latencies"]
    return {
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "received": col["received"],
        "expected": expected,
        "delivered_pct": 100.0 * col["received"] / expected if expected else float("nan"),
    }


def _broadcasts(
    server: servers.Server, lg: LoadGen, publisher: Publisher, n: int, cfg: argparse.Namespace
) -> dict[str, Any]:
    """Spaced then burst broadcasts to n connected subscribers, with /livez timed throughout."""
    out: dict[str, Any] = {}
    sampler = LivezSampler(server.port)
    sampler.start()
    try:
        lg.reset()
        for seq in range(cfg.spaced):
            publisher.publish(seq)
            time.sleep(cfg.spaced_interval)
        lg.wait_received(n * cfg.spaced, timeout=30)
        out["spaced"] = _latency_stats(lg.collect(), n * cfg.spaced)

        lg.reset(min_seq=cfg.spaced)
        publisher.call_ms = []
        tree0 = server.processes()
        cpu0, queue_cpu0 = server.cpu_seconds(), server.queue_cpu_seconds()
        lg_cpu0, t0 = lg.cpu_seconds(), time.time()
        for seq in range(cfg.spaced, cfg.spaced + cfg.burst):
            publisher.publish(seq)
        published_s = time.time() - t0
        lg.wait_received(n * cfg.burst, timeout=120)
        cpu = server.cpu_seconds() - cpu0
        queue_cpu = server.queue_cpu_seconds()
        loadgen_cpu = lg.cpu_seconds() - lg_cpu0
        if tree0 - server.processes():
            # A process of the tree died (gunicorn killed its worker): its CPU time left the sum with it.
            cpu = float("nan")
            out["error"] = "a server process died during the burst"
        col = lg.collect()
    finally:
        out["livez_under_load"] = sampler.stop()
    burst = _latency_stats(col, n * cfg.burst)
    span = col["last_recv"] - t0 if col["received"] else float("nan")
    burst["delivered_per_s"] = col["received"] / span if col["received"] else 0.0

    def per_10k(seconds: float) -> float:
        return seconds / col["received"] * 1e4 if col["received"] else float("nan")

    burst["cpu_s_per_10k"] = per_10k(cpu)
    # The clients' own cost over the same span: a load generator near a core per process would be the bottleneck.
    burst["loadgen_cpu_s_per_10k"] = per_10k(loadgen_cpu)
    burst["loadgen_cpu_s"], burst["server_cpu_s"], burst["span_s"] = loadgen_cpu, cpu, span
    if queue_cpu is not None and queue_cpu0 is not None:  # the Redis the instances share, apart from their CPU
        burst["queue_cpu_s"] = queue_cpu - queue_cpu0
        burst["queue_cpu_ms_per_10k"] = per_10k(queue_cpu - queue_cpu0) * 1e3  # ms: it is small
    burst["publish_calls_s"] = published_s
    calls = sorted(publisher.call_ms)
    burst["publish_call_p50_ms"] = percentile(calls, 50)
    burst["publish_call_p99_ms"] = percentile(calls, 99)
    out["burst"] = burst
    out["publish_errors"] = publisher.errors
    out["dropped"] = col["dropped"]
    out["stale_receipts"] = col["stale"]
    return out


def measure_broadcast(start: Callable[[], servers.Server], clients: int, cfg: argparse.Namespace) -> dict[str, Any]:
    """One fresh server, `clients` subscribers: connect, spaced and burst broadcasts, cost, clean close."""
    server = start()
    out: dict[str, Any] = {"server": server.name, "clients": clients, "loadavg_1m": os.getloadavg()[0]}
    publisher = Publisher(server)
    try:
        time.sleep(0.5)
        base = server.status()
        with LoadGen(cfg.processes) as lg:
            opened = lg.open(
                "127.0.0.1",
                server.ports,
                clients,
                auth=server.auth,
                subscribe=server.subscribe,
                timeout=30 + clients / 20,
            )
            n = opened["connected"]
            times = opened["connect_times"]
            out["connect"] = {
                "connected": n,
                "failed": opened["failed"],
                "errors": opened["errors"],
                "wall_s": opened["wall"],
                "p50_ms": percentile(times, 50) * 1e3,
                "p99_ms": percentile(times, 99) * 1e3,
            }
            if not n:
                out["error"] = f"no client connected: {opened['errors']}"
                return out
            time.sleep(1.0)
            loaded = server.status()
            out["rss_kib_per_conn"] = (loaded["rss_kib"] - base["rss_kib"]) / n
            out["threads_per_conn"] = (loaded["threads"] - base["threads"]) / n
            out["server_threads"] = loaded["threads"]
            out["server_rss_mib"] = loaded["rss_kib"] / 1024
            if server.has_publish_api:
                out |= _broadcasts(server, lg, publisher, n, cfg)
            else:
                out["error"] = "no publish API"
            closed = lg.close_clients(timeout=cfg.close_timeout)
            out["close"] = {
                "wall_s": closed["wall"],
                "unanswered": closed["unanswered"],
                "p50_ms": percentile(closed["close_times"], 50) * 1e3,
                "p99_ms": percentile(closed["close_times"], 99) * 1e3,
            }
    finally:
        publisher.close()
        out["server_log_errors"] = _log_errors(server)
        if out["server_log_errors"]:
            out["server_log"] = _keep_log(server, clients)
        server.stop()
    return out


def _log_errors(server: servers.Server) -> list[str]:
    """ERROR lines and tracebacks in the server's logs (every instance's): they count against a server."""
    found = []
    for member in server.members:
        try:
            found += _errors_in(member.log_path.read_text(errors="replace").splitlines())
        except OSError:
            pass
    return found[:20]


def _errors_in(lines: list[str]) -> list[str]:
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            # The exception itself is the first unindented line after the frames.
            exc = next((later for later in lines[i + 1 :] if later and not later[0].isspace()), "")
            found.append(f"Traceback: {exc}"[:200])
        elif "ERROR" in line or "CRITICAL" in line:
            found.append(line[:200])
    return found[:20]


def _worker_killed(run: dict[str, Any]) -> bool:
    return any("WORKER TIMEOUT" in line for line in run.get("server_log_errors", []))


KEPT_LOGS = Path(tempfile.gettempdir()) / "signalboard-bench-logs"


def _keep_log(server: servers.Server, clients: int) -> str:
    """Copy the logs of a server that has errors out of their work directories (removed on stop); returns the
    copies' paths."""
    KEPT_LOGS.mkdir(exist_ok=True)
    kept = []
    for i, member in enumerate(server.members):
        dest = KEPT_LOGS / f"{server.name}-{clients}-{time.strftime('%H%M%S')}{f'-{i}' if i else ''}.log"
        shutil.copyfile(member.log_path, dest)
        kept.append(str(dest))
    return ", ".join(kept)


# Figures in the report: (label, path into a measurement, lower is better).
FIGURES: list[tuple[str, tuple[str, ...], bool]] = [
    ("connect all clients, wall (s)", ("connect", "wall_s"), True),
    ("connect per client p50 (ms)", ("connect", "p50_ms"), True),
    ("connect per client p99 (ms)", ("connect", "p99_ms"), True),
    ("spaced publish-to-receipt p50 (ms)", ("spaced", "p50_ms"), True),
    ("spaced publish-to-receipt p99 (ms)", ("spaced", "p99_ms"), True),
    ("burst publish-to-receipt p50 (ms)", ("burst", "p50_ms"), True),
    ("burst publish-to-receipt p99 (ms)", ("burst", "p99_ms"), True),
    ("delivered msgs/s (burst)", ("burst", "delivered_per_s"), False),
    ("delivered % (burst)", ("burst", "delivered_pct"), False),
    ("server CPU s per 10k deliveries", ("burst", "cpu_s_per_10k"), True),
    ("Redis CPU ms per 10k deliveries", ("burst", "queue_cpu_ms_per_10k"), True),
    ("load generator CPU s per 10k deliveries", ("burst", "loadgen_cpu_s_per_10k"), True),
    ("publish call p50 (ms, burst)", ("burst", "publish_call_p50_ms"), True),
    ("RSS per connection (KiB)", ("rss_kib_per_conn",), True),
    ("server RSS after connect (MiB)", ("server_rss_mib",), True),
    ("OS threads per connection", ("threads_per_conn",), True),
    ("/livez under load p50 (ms)", ("livez_under_load", "p50_ms"), True),
    ("/livez under load p99 (ms)", ("livez_under_load", "p99_ms"), True),
    ("close all clients, wall (s)", ("close", "wall_s"), True),
    ("clients dropped by the server", ("dropped",), True),
]


def _dig(run: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = run
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else None


def medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for label, path, _ in FIGURES:
        values = [v for v in (_dig(r, path) for r in runs) if v is not None and v == v]
        out[label] = statistics.median(values) if values else None
    return out


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except OSError:
            return "unavailable"

    pkgs = version([str(servers.VENV_BIN / "python"), "-c", (
        "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in "
        "('flask','flask-socketio','python-socketio','python-engineio','simple-websocket','gunicorn')))")])
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": version(["node", "--version"]),
        "python_packages": pkgs,
        "signalboard_commit": version(["git", "-C", str(servers.REPO_DIR), "rev-parse", "--short", "HEAD"]),
        # Signalboard runs from the work tree; say when that differs from the commit.
        "uncommitted_changes": bool(version(["git", "-C", str(servers.REPO_DIR), "status", "--porcelain", "-uno"])),
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == float("inf"):
        return "timeout"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or a != a or b != b or float("inf") in (a, b):
        return "n/a"
    return f"{a / b:.2f}×"


def _json_safe(value: Any) -> Any:
    """Strict JSON: a timed-out percentile (inf) becomes "timeout", an undefined one (nan) null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "timeout"
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _load_line(report: dict[str, Any]) -> str:
    loads = sorted(
        run["loadavg_1m"]
        for per_server in report["broadcast"].values()
        for entry in per_server.values()
        for run in entry["runs"]
        if "loadavg_1m" in run
    )
    if not loads:
        return ""
    return (
        f"Machine load (1-minute load average when each run started, other work shares this machine): "
        f"min {loads[0]:.1f}, median {statistics.median(loads):.1f}, max {loads[-1]:.1f} on {os.cpu_count()} CPUs."
    )


def write_report(report: dict[str, Any], out_base: Path) -> None:
    out_base.parent.mkdir(parents=True, exist_ok=True)
    out_base.with_suffix(".json").write_text(json.dumps(_json_safe(report), indent=1, allow_nan=False) + "\n")
    m = report["machine"]
    names = report["server_names"]
    lines = [
        "# Signalboard benchmark report",
        "",
        f"Measured {m['date_utc']} on {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}, Node {m['node']}; {m['python_packages']}; "
        f"Signalboard at commit {m['signalboard_commit']}"
        + (" plus uncommitted changes in the work tree." if m.get("uncommitted_changes") else "."),
        "",
        f"Command: `{report['command']}`. Mode: {report['mode']}; each figure is the median of "
        f"{report['config']['reps']} run(s), each on a fresh server. Load generator and servers share the machine, "
        "so absolute figures are noisy; the ratios from the same run are what count.",
        "",
        "Servers: " + "; ".join(f"**{n}**: {report['server_descriptions'][n]}" for n in names) + ".",
        "",
        _load_line(report),
        "",
        "Ratios are Signalboard / anchor (below 1× is better for Signalboard, except msgs/s and delivered %).",
        "",
        "## Capacity: concurrent websocket clients with `/livez` p99 < 250 ms (one process)",
        "",
        "| server | max clients held | why the ramp stopped |",
        "| --- | ---: | --- |",
    ]
    for cap in report["capacity"]:
        lines.append(f"| {cap['server']} | {cap['max_held']} | {cap['stop_reason']} |")
    sb = "signalboard" if "signalboard" in names else None
    anchors = [n for n in names if n != sb]
    for clients, per_server in report["broadcast"].items():
        lines += ["", f"## {clients} clients", ""]
        header = "| figure | " + " | ".join(names) + " |" + "".join(f" SB/{a} |" for a in anchors if sb)
        lines += [header, "| --- |" + " ---: |" * (len(names) + (len(anchors) if sb else 0))]
        for label, _, _ in FIGURES:
            cells = [_fmt(per_server[n]["median"].get(label)) if n in per_server else "n/a" for n in names]
            ratios = [_ratio(per_server.get(sb, {}).get("median", {}).get(label),
                             per_server.get(a, {}).get("median", {}).get(label)) for a in anchors] if sb else []
            lines.append(f"| {label} | " + " | ".join(cells) + " |" + "".join(f" {r} |" for r in ratios))
        killed = [sum(_worker_killed(run) for run in per_server.get(n, {}).get("runs", [])) for n in names]
        runs = [len(per_server.get(n, {}).get("runs", [])) for n in names]
        lines.append("| runs whose worker gunicorn killed (timeout) | "
                     + " | ".join(f"{k} of {r}" for k, r in zip(killed, runs, strict=True)) + " |"
                     + " |" * (len(anchors) if sb else 0))
        notes = []
        for n in names:
            for run in per_server.get(n, {}).get("runs", []):
                if run.get("error"):
                    notes.append(f"{n}: {run['error']}")
                if run.get("server_log_errors"):
                    notes.append(f"{n}: {len(run['server_log_errors'])} ERROR/traceback log lines, first: "
                                 f"`{run['server_log_errors'][0]}`")
                if run.get("publish_errors"):
                    notes.append(f"{n}: publish errors {run['publish_errors']}")
                if run.get("connect", {}).get("failed"):
                    notes.append(f"{n}: {run['connect']['failed']} failed connects {run['connect']['errors']}")
        if notes:
            lines += ["", "Notes: " + "; ".join(sorted(set(notes)))]
    lines += [
        "",
        "## How each figure is measured",
        "",
        "- Clients: raw-websocket Engine.IO v4 / Socket.IO v5 clients (`bench/loadgen.py`) in "
        f"{report['config']['processes']} processes; each connects, sends `40` (with a token for Signalboard), "
        "emits `subscribe` with an ack and waits for it. Connect time runs from TCP connect to that ack.",
        f"- Spaced: {report['config']['spaced']} publishes {report['config']['spaced_interval'] * 1000:.0f} ms apart; "
        f"burst: {report['config']['burst']} publishes back to back over one keep-alive HTTP connection. "
        "Latency is receipt time minus the publisher's send time carried in the payload.",
        "- Delivered msgs/s: burst deliveries divided by the time from the first publish to the last receipt. "
        "CPU: utime+stime of the server's process tree (/proc/<pid>/stat) over the burst, per 10,000 deliveries.",
        "- RSS and threads per connection: VmRSS and Threads (/proc/<pid>/status) of the fresh server's process "
        "tree after connecting, minus before, divided by the clients connected.",
        "- /livez under load: sequential GETs on fresh connections every 20 ms during the spaced and burst phases.",
        "- Close: the clients send `41` and a websocket close frame; the time until the server answers the close "
        "or closes TCP.",
        "- Capacity: clients added in steps (1, 2, 3, 4, 5, 10, 25, 50, 100, 250, 500, 1000, 1500, ...); at each "
        "step 100 sequential /livez requests (2 s timeout); stop at the first step with p99 ≥ 250 ms or a timeout "
        "in two measurements in a row, a failed connect or a dropped client.",
        "",
    ]
    out_base.with_suffix(".md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Signalboard benchmark and write the report.")
    parser.add_argument("--quick", action="store_true", help="a few minutes: fewer clients, messages, repetitions")
    parser.add_argument("--servers", default="stock,node,signalboard", help="comma-separated subset")
    parser.add_argument("--counts", help="comma-separated client counts (default 100,500,1000; quick 100,1000)")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 3; quick 1)")
    parser.add_argument("--processes", type=int, default=4, help="load generator processes")
    parser.add_argument("--no-capacity", action="store_true")
    parser.add_argument("--out", default=str(servers.REPO_DIR / "docs" / "bench-report"), help="path without suffix")
    cfg = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg.counts = [int(c) for c in (cfg.counts or ("100,1000" if cfg.quick else "100,500,1000")).split(",")]
    cfg.reps = cfg.reps or (1 if cfg.quick else 3)
    cfg.spaced, cfg.spaced_interval = (10, 0.1) if cfg.quick else (20, 0.1)
    cfg.burst = 20 if cfg.quick else 50
    cfg.close_timeout = 30.0
    max_clients = 2000 if cfg.quick else 3000

    wanted = cfg.servers.split(",")
    if "signalboard" in wanted and not servers.signalboard_available():
        log.warning("no start.sh/app.py in %s: Signalboard skipped", servers.REPO_DIR)
        wanted.remove("signalboard")
    stock_name = f"stock-t{STOCK_BIG_THREADS}"
    starters: dict[str, Callable[[], servers.Server]] = {}
    descriptions: dict[str, str] = {}
    if "stock" in wanted:
        starters[stock_name] = lambda: servers.start_stock(STOCK_BIG_THREADS, worker_connections=4096)
        descriptions[stock_name] = (f"stock Flask-SocketIO (threading) under gunicorn gthread `--workers 1 --threads "
                                    f"{STOCK_BIG_THREADS} --worker-connections 4096`; broadcast with `socketio.emit`")
    if "node" in wanted:
        starters["node"] = servers.start_node
        descriptions["node"] = "Node.js socket.io 4.8.4, `io.emit` from an HTTP endpoint"
    if "signalboard" in wanted:
        starters["signalboard"] = servers.start_signalboard
        descriptions["signalboard"] = ("Signalboard via `start.sh` with its defaults; clients hold a token and "
                                       "subscribe to one channel; `POST /api/v1/publish`")

    report: dict[str, Any] = {
        "command": "python bench/run.py" + (" --quick" if cfg.quick else ""),
        "mode": "quick" if cfg.quick else "full",
        "machine": machine_info(),
        "config": {k: getattr(cfg, k) for k in ("counts", "reps", "processes", "spaced", "spaced_interval", "burst")},
        "server_names": list(starters),
        "server_descriptions": descriptions,
        "capacity": [],
        "broadcast": {},
    }
    if not cfg.no_capacity:
        cap_starters = {"stock-t4": lambda: servers.start_stock(threads=4)} if "stock" in wanted else {}
        cap_starters |= {n: s for n, s in starters.items() if n != stock_name}
        for name, start in cap_starters.items():
            log.info("capacity: %s", name)
            try:
                result = capacity.run_capacity(start, capacity.DEFAULT_STEPS, max_clients, cfg.processes)
            except (RuntimeError, TimeoutError) as exc:
                log.error("capacity of %s failed: %s", name, exc)
                result = {"server": name, "max_held": None, "stop_reason": str(exc).splitlines()[0], "steps": []}
            report["capacity"].append(result)
        write_report(report, Path(cfg.out))
    for clients in cfg.counts:
        per_server: dict[str, Any] = {}
        for rep in range(cfg.reps):
            # Interleave servers within a repetition so slow drifts of a shared machine hit all of them alike.
            for name, start in starters.items():
                log.info("broadcast: %s, %d clients, run %d/%d", name, clients, rep + 1, cfg.reps)
                try:
                    run = measure_broadcast(start, clients, cfg)
                except (RuntimeError, TimeoutError) as exc:  # a server that would not start, a stuck worker
                    log.error("%s at %d clients failed: %s", name, clients, exc)
                    run = {"server": name, "clients": clients, "error": str(exc).splitlines()[0]}
                log.info("%s", json.dumps({k: v for k, v in run.items() if k != "server_log_errors"}, default=str))
                per_server.setdefault(name, {"runs": []})["runs"].append(run)
        for entry in per_server.values():
            entry["median"] = medians(entry["runs"])
        report["broadcast"][str(clients)] = per_server
        write_report(report, Path(cfg.out))
    log.info("wrote %s.md and .json", cfg.out)


if __name__ == "__main__":
    main()
