"""N clients connecting at once (connect, Socket.IO namespace connect with the token, subscribe with its ack) against
Signalboard, next to the Node.js Socket.IO server's plain connects (and its connects with a subscribe), in one run.

    .venv/bin/python bench/connect_storm.py                        # 5000 clients, 3 rounds, interleaved
    .venv/bin/python bench/connect_storm.py --clients 1000 --reps 1
    .venv/bin/python bench/connect_storm.py --profile --clients 3000   # py-spy on Signalboard's worker meanwhile
    .venv/bin/python bench/connect_storm.py --baseline /tmp/old        # also an older checkout (git archive), same run

Each round starts a fresh server and opens every client with no cap on handshakes in flight. Reported per server:
wall time until all are connected, refusals by reason, /livez p50/p99 sampled every 20 ms throughout (on a new
connection each time, as a health checker asks, and on one kept-alive connection, which skips the listen backlog
every connect of the storm waits in), server CPU
per client, the load generator's own CPU per client, RSS per connection. The token is minted once (POST
/api/v1/tokens) and shared by every client: minting is the publisher's cost, not the connect path's. Results go to
docs/perf-connects.{json,md} (medians of the rounds; ratios against Node's plain connects).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import perf_transport  # noqa: E402
import run  # noqa: E402
import servers  # noqa: E402
from loadgen import LoadGen  # noqa: E402

log = logging.getLogger("bench.connect_storm")

FIGURES = ("wall_s", "server_cpu_ms_per_client", "loadgen_cpu_ms_per_client", "livez_p50_ms", "livez_p99_ms",
           "livez_kept_alive_p50_ms", "livez_kept_alive_p99_ms", "rss_kib_per_conn", "connected", "failed")


def plain(start: Callable[[], servers.Server]) -> Callable[[], servers.Server]:
    def started() -> servers.Server:
        server = start()
        server.subscribe = None
        server.name += "-plain"
        return server

    return started


STARTERS: dict[str, Callable[[], servers.Server]] = {
    "signalboard": lambda: servers.start_signalboard({"LOG_LEVEL": "WARNING"}),
    "node-plain": plain(servers.start_node),
    "node-subscribe": servers.start_node,
}


def storm(start: Callable[[], servers.Server], clients: int, processes: int,
          profile: Path | None = None) -> dict[str, Any]:
    server = start()
    spy = None
    out: dict[str, Any] = {"server": server.name, "clients": clients}
    try:
        time.sleep(0.5)
        base = servers.tree_status(server.pid)
        with LoadGen(processes) as lg:
            samplers = {"livez": run.LivezSampler(server.port),
                        "livez_kept_alive": run.LivezSampler(server.port, kept_alive=True)}
            for sampler in samplers.values():
                sampler.start()
            if profile is not None:
                spy = subprocess.Popen([str(servers.VENV_BIN / "py-spy"), "record", "--pid",
                                        str(servers.process_tree(server.pid)[1]), "--format", "raw", "--output",
                                        str(profile), "--gil", "--rate", "200", "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)  # py-spy attached
            cpu0, lg_cpu0 = servers.tree_cpu_seconds(server.pid), lg.cpu_seconds()
            opened = lg.open("127.0.0.1", server.port, clients, auth=server.auth, subscribe=server.subscribe,
                             timeout=120, concurrency=clients)
            cpu, lg_cpu = servers.tree_cpu_seconds(server.pid) - cpu0, lg.cpu_seconds() - lg_cpu0
            livez = {name: sampler.stop() for name, sampler in samplers.items()}
            n = opened["connected"]
            loaded = servers.tree_status(server.pid)
            out |= {"connected": n, "failed": opened["failed"], "errors": opened["errors"], "wall_s": opened["wall"],
                    "server_cpu_ms_per_client": cpu / max(n, 1) * 1e3,
                    "loadgen_cpu_ms_per_client": lg_cpu / max(n, 1) * 1e3,
                    **{f"{name}_{key}": stats[key] for name, stats in livez.items()
                       for key in ("p50_ms", "p99_ms", "failures")},
                    "rss_kib_per_conn": (loaded["rss_kib"] - base["rss_kib"]) / max(n, 1)}
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
                spy.wait(timeout=60)
            lg.close_clients(timeout=60)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()  # by PID
            spy.wait(5)
        server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--servers", default=",".join(STARTERS))
    parser.add_argument("--out", default=str(servers.REPO_DIR / "docs" / "perf-connects"))
    parser.add_argument("--profile", action="store_true", help="py-spy on Signalboard during one storm, summarized")
    parser.add_argument("--baseline", type=Path, help="another checkout of Signalboard (e.g. `git archive` of an "
                        "older commit, with a .venv link), run as signalboard-baseline in each round")
    args = parser.parse_args()
    if args.baseline is not None:
        STARTERS["signalboard-baseline"] = lambda: servers.start_signalboard(
            {"LOG_LEVEL": "WARNING"}, repo=args.baseline.resolve(), name="signalboard-baseline")
        if "signalboard-baseline" not in args.servers:
            args.servers = "signalboard-baseline," + args.servers
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.profile:
        raw = Path(tempfile.mkdtemp(prefix="connect-profile-")) / "stacks.txt"
        log.info("%s", storm(STARTERS["signalboard"], args.clients, args.processes, profile=raw))
        perf_transport.summarize(raw, 40)
        return
    names = args.servers.split(",")
    report: dict[str, Any] = {"machine": run.machine_info(), "clients": args.clients, "runs": {n: [] for n in names}}
    for rep in range(args.reps):
        for name in names:  # interleaved: a drift of the shared machine hits every server alike
            result = storm(STARTERS[name], args.clients, args.processes)
            log.info("%s round %d: %s", name, rep + 1, json.dumps(result, default=str))
            report["runs"][name].append(result)
            write(report, Path(args.out))


def write(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    medians = {name: {f: statistics.median(r[f] for r in runs) for f in FIGURES if all(f in r for r in runs)}
               for name, runs in report["runs"].items() if runs}
    report["medians"] = medians
    out.with_suffix(".json").write_text(json.dumps(run._json_safe(report), indent=1) + "\n")
    names = list(medians)
    lines = [f"# {report['clients']} clients connecting at once ({report['machine']['date_utc']}, "
             f"commit {report['machine']['signalboard_commit']})", "",
             "Medians of " + ", ".join(f"{n}: {len(report['runs'][n])}" for n in names) + " rounds.", "",
             "| figure | " + " | ".join(names) + " | signalboard/node-plain |",
             "| --- |" + " ---: |" * (len(names) + 1)]
    for figure in FIGURES:
        cells = [run._fmt(medians[n].get(figure)) for n in names]
        ratio = run._ratio(medians.get("signalboard", {}).get(figure), medians.get("node-plain", {}).get(figure))
        lines.append(f"| {figure} | " + " | ".join(cells) + f" | {ratio} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
