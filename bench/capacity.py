"""How many concurrent websocket clients one server process holds while GET /livez p99 stays under 250 ms.

Clients are added in steps; at each step /livez is timed (100 sequential requests). The ramp stops at the first
step where the p99 reaches the threshold or a /livez request times out (twice in a row, so that one busy moment
of a shared machine does not count), a connect fails, or the server drops held clients.
Run alone: `python bench/capacity.py --server signalboard` (or stock-t4, node); run.py calls it too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers  # noqa: E402
from loadgen import LoadGen, percentile  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_STEPS = [1, 2, 3, 4, 5, 10, 25, 50, 100, 250, 500, 1000, 1500, 2000, 2500, 3000]
THRESHOLD_MS = 250.0


def measure_livez(port: int, requests: int = 100, interval: float = 0.01, timeout: float = 2.0) -> dict[str, Any]:
    """Time sequential GET /livez on fresh connections (as a health checker would); stops at the first failure."""
    latencies: list[float] = []
    failure = ""
    for _ in range(requests):
        t0 = time.perf_counter()
        try:
            status, _ = servers.http_request(port, "GET", "/livez", timeout=timeout)
        except OSError as exc:
            failure = f"{exc.__class__.__name__} after {time.perf_counter() - t0:.2f}s"
            break
        if status != 200:
            failure = f"HTTP {status}"
            break
        latencies.append((time.perf_counter() - t0) * 1e3)
        time.sleep(interval)
    latencies.sort()
    return {
        "count": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99) if not failure else float("inf"),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "failure": failure,
    }


def run_capacity(
    start: Callable[[], servers.Server],
    steps: list[int],
    max_clients: int,
    processes: int = 4,
    livez_requests: int = 100,
    settle: float = 1.0,
) -> dict[str, Any]:
    """Ramp through `steps` (capped at max_clients) on a fresh server; returns every step and the verdict."""
    server = start()
    results: list[dict[str, Any]] = []
    max_held = 0
    stop_reason = f"reached the bounded maximum ({max_clients})"
    try:
        with LoadGen(processes) as lg:
            opened = 0
            for target in [s for s in steps if s <= max_clients]:
                opened_now = lg.open(
                    "127.0.0.1",
                    server.port,
                    target - opened,
                    auth=server.auth,
                    subscribe=server.subscribe,
                    timeout=20 + (target - opened) / 50,
                )
                opened = target
                time.sleep(settle)
                counts = lg.count()
                livez = measure_livez(server.port, livez_requests)
                if livez["failure"] or livez["p99_ms"] >= THRESHOLD_MS:
                    # One busy moment of a shared machine is not saturation: a step fails only if it fails twice.
                    first = livez
                    livez = measure_livez(server.port, livez_requests)
                    livez["first_attempt"] = first
                status = servers.tree_status(server.pid)
                step = {
                    "target": target,
                    "alive": counts["alive"],
                    "dropped": counts["dropped"],
                    "failed_connects": opened_now["failed"],
                    "connect_errors": opened_now["errors"],
                    "connect_wall_s": opened_now["wall"],
                    "livez": livez,
                    "server_threads": status["threads"],
                    "server_rss_kib": status["rss_kib"],
                }
                results.append(step)
                log.info(
                    "%s: %d clients alive, livez p50 %.1f ms p99 %.1f ms %s, failed connects %d %s",
                    server.name, counts["alive"], livez["p50_ms"], livez["p99_ms"], livez["failure"],
                    opened_now["failed"], opened_now["errors"] or "",
                )  # fmt: skip
                if livez["failure"] or livez["p99_ms"] >= THRESHOLD_MS:
                    stop_reason = f"/livez p99 {livez['p99_ms']:.0f} ms {livez['failure']} at {target} clients"
                    break
                if opened_now["failed"] or counts["dropped"]:
                    stop_reason = (
                        f"{opened_now['failed']} connects failed {opened_now['errors']}, "
                        f"{counts['dropped']} dropped at {target} clients"
                    )
                    # Clients that did connect are still held with a healthy /livez: count them.
                    max_held = max(max_held, counts["alive"])
                    break
                max_held = counts["alive"]
            try:
                lg.close_clients(timeout=15)
            except TimeoutError:  # the figures are in; the server is ended by PID below either way
                log.warning("load generator did not finish closing the clients")
    finally:
        server.stop()
    return {"server": server.name, "max_held": max_held, "stop_reason": stop_reason, "steps": results}


STARTERS: dict[str, Callable[[], servers.Server]] = {
    "signalboard": servers.start_signalboard,
    "stock-t4": lambda: servers.start_stock(threads=4),
    "node": servers.start_node,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=sorted(STARTERS), action="append", help="repeatable; default all")
    parser.add_argument("--max-clients", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=4, help="load generator processes")
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)),
                        help="client counts to stop at, e.g. 1,5000,10000,15000,18000,20000")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for Signalboard (e.g. GUNICORN_THREADS=2500); repeatable")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.env:
        extra = dict(item.split("=", 1) for item in args.env)
        STARTERS["signalboard"] = lambda: servers.start_signalboard(extra)
    out = [
        run_capacity(STARTERS[name], [int(step) for step in args.steps.split(",")], args.max_clients, args.processes)
        for name in args.server or STARTERS
    ]
    for result in out:
        print(f"{result['server']}: max held {result['max_held']} ({result['stop_reason']})")
        if not result["steps"]:
            continue
        first = result["steps"][0]
        for step in result["steps"][1:]:
            per_conn = (step["server_rss_kib"] - first["server_rss_kib"]) / max(1, step["alive"] - first["alive"])
            print(f"  {step['alive']} held: /livez p99 {step['livez']['p99_ms']:.1f} ms, "
                  f"{per_conn:.1f} KiB RSS per connection over the first step, {step['server_threads']} threads")
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
