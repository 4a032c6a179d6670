"""Signalboard's websocket transports side by side: `threaded` (python-engineio as shipped) against `shared`
(transport/), with the Node.js and stock Flask-SocketIO anchors measured in the same run.

    python bench/perf_transport.py compare            # 500 and 1000 clients, 3 repetitions, capacity ramps
    python bench/perf_transport.py compare --quick    # 1 repetition, 500 clients, no capacity ramp
    python bench/perf_transport.py profile --transport shared --clients 1000   # py-spy while broadcasting
    python bench/perf_transport.py compare --servers signalboard-redis,node-redis --counts 1000 --no-capacity
                                           # Redis mode: two instances each, sharing a redis-server (see RATIOS)

It reuses bench/run.py's broadcast measurement and bench/capacity.py's ramp, so the figures mean the same as in
docs/bench-report.md; the results go to docs/perf-transport.{json,md}, and docs/perf.md quotes them.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import capacity  # noqa: E402
import run  # noqa: E402
import servers  # noqa: E402
from loadgen import LoadGen  # noqa: E402

from tests.scale.processes import RedisProcess  # noqa: E402

log = logging.getLogger("bench.perf_transport")

SIGNALBOARD_ENV = {"LOG_LEVEL": "WARNING"}  # MAX_WEBSOCKET_CLIENTS: derived from the descriptor limit
CAPACITY_STEPS = [100, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000]


def signalboard(transport: str) -> Callable[[], servers.Server]:
    def start() -> servers.Server:
        server = servers.start_signalboard(SIGNALBOARD_ENV | {"WEBSOCKET_TRANSPORT": transport})
        server.name = f"signalboard-{transport}"
        return server

    return start


def redis_pair(name: str, start_one: Callable[[str], servers.Server]) -> Callable[[], servers.Server]:
    """Two instances started by `start_one(redis_url)` on their own ports, sharing a fresh redis-server (no
    persistence); the first one, with the second as its peer, is the server measured."""

    def start() -> servers.Server:
        redis = RedisProcess(durable=False).start()
        started: list[servers.Server] = []
        try:
            while len(started) < 2:
                started.append(start_one(redis.url))
        except BaseException:
            for server in started:
                server.stop()
            redis.close()
            raise
        first, second = started
        first.name, first.peers, first.queue = name, [second], redis
        return first

    return start


def signalboard_redis(redis_url: str) -> servers.Server:
    # start_signalboard gives every instance the same SECRET_KEY and API key: a token minted on one works on both.
    return servers.start_signalboard(SIGNALBOARD_ENV | {"WEBSOCKET_TRANSPORT": "shared", "REDIS_URL": redis_url})


def starters(names: list[str]) -> dict[str, Callable[[], servers.Server]]:
    every: dict[str, Callable[[], servers.Server]] = {
        "signalboard-threaded": signalboard("threaded"),
        "signalboard-shared": signalboard("shared"),
        "signalboard-redis": redis_pair("signalboard-redis", signalboard_redis),
        "node": servers.start_node,
        "node-redis": redis_pair("node-redis", lambda url: servers.start_node(redis_url=url)),
        f"stock-t{run.STOCK_BIG_THREADS}": lambda: servers.start_stock(run.STOCK_BIG_THREADS, worker_connections=4096),
    }
    return {name: start for name, start in every.items()
            if name in names or (name.startswith("stock") and "stock" in names)}


# Ratios shown when both servers ran: (numerator, denominator).
RATIOS = [("signalboard-shared", "node"), ("signalboard-shared", "stock"),
          ("signalboard-shared", "signalboard-threaded"), ("signalboard-redis", "node-redis"),
          ("signalboard-redis", "signalboard-shared")]


def compare(args: argparse.Namespace) -> dict[str, Any]:
    cfg = argparse.Namespace(processes=args.processes, spaced=20, spaced_interval=0.1, burst=50, close_timeout=30.0)
    chosen = starters(args.servers.split(","))
    report: dict[str, Any] = {"machine": run.machine_info(), "counts": args.counts, "reps": args.reps,
                              "servers": list(chosen), "broadcast": {}, "capacity": []}
    out = Path(args.out)
    for clients in args.counts:
        per_server: dict[str, Any] = {}
        for rep in range(args.reps):
            for name, start in chosen.items():  # interleaved, so drifts of the shared machine hit all alike
                log.info("broadcast: %s, %d clients, run %d/%d (load %.1f)", name, clients, rep + 1, args.reps,
                         os.getloadavg()[0])
                result = run.measure_broadcast(start, clients, cfg)
                log.info("%s", json.dumps({k: v for k, v in result.items() if k != "server_log_errors"},
                                          default=str)[:1500])
                entry = per_server.setdefault(name, {"runs": []})
                entry["runs"].append(result)
                entry["median"] = run.medians(entry["runs"])
                report["broadcast"][str(clients)] = per_server
                write(report, out)  # after every run, so a run cut short still leaves its figures
    if not args.no_capacity:
        steps = [int(s) for s in args.capacity_steps.split(",")]
        for name in args.capacity_servers.split(","):
            if name in chosen:
                log.info("capacity: %s", name)
                report["capacity"].append(capacity.run_capacity(chosen[name], steps, args.max_clients,
                                                                args.processes))
                write(report, out)
    return report


def write(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(run._json_safe(report), indent=1) + "\n")
    names = report["servers"]
    lines = [f"# Transport comparison ({report['machine']['date_utc']}, {report['machine']['nproc']} CPUs, "
             f"{report['machine']['cpu_model']})", "",
             f"Medians of the runs listed (up to {report['reps']} per server, interleaved); ratios are between "
             "these medians, measured in the same session.", ""]
    stock = next((n for n in names if n.startswith("stock")), "stock")
    ratios = [(a, stock if b == "stock" else b) for a, b in RATIOS]
    ratios = [(a, b) for a, b in ratios if a in names and b in names]
    short = [f"{a.removeprefix('signalboard-')}/{b.removeprefix('signalboard-')}" for a, b in ratios]
    for clients, per_server in report["broadcast"].items():
        runs = ", ".join(f"{n}: {len(per_server.get(n, {}).get('runs', []))}" for n in names)
        header = "| figure | " + " | ".join(names + short) + " |"
        lines += [f"## {clients} clients", "", f"Runs: {runs}.", "", header,
                  "| --- |" + " ---: |" * (len(names) + len(short))]
        for label, _, _ in run.FIGURES:
            med = {n: per_server.get(n, {}).get("median", {}).get(label) for n in names}
            cells = [run._fmt(med[n]) for n in names] + [run._ratio(med[a], med[b]) for a, b in ratios]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if any(n.endswith("-redis") for n in names):
        lines += ["`-redis`: two instances on their own ports sharing one redis-server (no persistence); the clients "
                  "are split evenly over the two, every publish goes to the first, so half of the recipients receive "
                  "it through Redis (Node's adapter publishes and emits locally in one call; Signalboard's publishing "
                  "instance also delivers from its queue listener: the PUBLISH is part of the history append, so "
                  "every Signalboard copy comes through Redis). Server CPU, RSS and threads are summed over both "
                  "instances; Redis CPU is redis-server's own.", ""]
    if report["capacity"]:
        lines += ["## Capacity (/livez p99 < 250 ms)", "", "| server | max clients held | why the ramp stopped |",
                  "| --- | ---: | --- |"]
        lines += [f"| {c['server']} | {c['max_held']} | {c['stop_reason']} |" for c in report["capacity"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def profile(args: argparse.Namespace) -> None:
    """Record the server worker with py-spy while clients receive bursts; print where the samples fall."""
    py_spy = shutil.which("py-spy", path=str(servers.VENV_BIN)) or shutil.which("py-spy")
    if not py_spy:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    # redis: the pair of compare's signalboard-redis, clients split over both, the first instance's worker recorded.
    server = starters([f"signalboard-{args.transport}"])[f"signalboard-{args.transport}"]()
    raw = Path(tempfile.mkdtemp(prefix="perf-profile-")) / "stacks.txt"
    try:
        with LoadGen(args.processes) as lg:
            opened = lg.open("127.0.0.1", server.ports, args.clients, auth=server.auth, subscribe=server.subscribe,
                             timeout=120)
            log.info("connected %d", opened["connected"])
            worker = servers.process_tree(server.pid)[1]
            # --gil samples only the thread holding the GIL: where the CPU goes, and cheap enough to finish on a
            # loaded machine with thousands of threads (threaded transport), which sampling every thread is not.
            spy = subprocess.Popen([py_spy, "record", "--pid", str(worker), "--duration", str(args.seconds),
                                    "--format", "raw", "--output", str(raw), "--gil", "--rate", str(args.rate),
                                    "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            publisher = run.Publisher(server)
            deadline, seq = time.time() + args.seconds, 0
            while time.time() < deadline:
                publisher.publish(seq)
                seq += 1
                time.sleep(args.interval)
            publisher.close()
            try:
                spy.wait(timeout=args.seconds * 10 + 60)
            except subprocess.TimeoutExpired:
                spy.kill()  # by PID
                spy.wait(5)
                raise
            log.info("published %d; received %s", seq, lg.count())
            lg.close_clients(timeout=15)
    finally:
        server.stop()
    summarize(raw, args.top)


def summarize(raw: Path, top: int) -> None:
    """Self and inclusive sample counts per function, and samples per thread, from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    per_thread: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        names = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")" for f in frames]
        per_thread[names[1] if len(names) > 1 else "?"] += n
        if names:
            own[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
    print(f"{total} samples")
    print("samples by thread entry point:")
    for name, n in per_thread.most_common(10):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("self time:")
    for name, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("inclusive:")
    for name, n in inclusive.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("--quick", action="store_true")
    cmp_.add_argument("--servers", default="signalboard-threaded,signalboard-shared,node,stock",
                      help="also signalboard-redis, node-redis: two instances sharing a redis-server")
    cmp_.add_argument("--counts", default="500,1000")
    cmp_.add_argument("--reps", type=int, default=3)
    cmp_.add_argument("--processes", type=int, default=4)
    cmp_.add_argument("--max-clients", type=int, default=5000)
    cmp_.add_argument("--no-capacity", action="store_true")
    cmp_.add_argument("--capacity-servers", default="signalboard-threaded,signalboard-shared,node")
    cmp_.add_argument("--capacity-steps", default=",".join(map(str, CAPACITY_STEPS)))
    cmp_.add_argument("--out", default=str(servers.REPO_DIR / "docs" / "perf-transport"))
    prof = sub.add_parser("profile")
    prof.add_argument("--transport", choices=("shared", "threaded", "redis"), default="shared")
    prof.add_argument("--clients", type=int, default=1000)
    prof.add_argument("--seconds", type=int, default=15)
    prof.add_argument("--interval", type=float, default=0.02, help="seconds between publishes")
    prof.add_argument("--processes", type=int, default=4)
    prof.add_argument("--top", type=int, default=25)
    prof.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "compare":
        args.counts = [int(c) for c in args.counts.split(",")]
        if args.quick:
            args.reps, args.counts, args.no_capacity = 1, [500], True
        compare(args)
    else:
        profile(args)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
