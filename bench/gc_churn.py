"""Sessions connecting and closing for many cycles: does the worker's memory stay bounded, and how long do its full
garbage collections pause it, with GC_FREEZE=1 (utils/gc_policy.py) and with CPython's own collections (0)?

    python bench/gc_churn.py --held 3000 --churn 1000 --cycles 12       # over 500 clients: under the bench lock
    python bench/gc_churn.py --repo /tmp/main-copy ...                   # the same servers from another checkout

For each setting, one fresh Signalboard (shared transport, its defaults) with bench/gc_probe logging every full
collection of the worker: `--held` subscribed clients in cohorts of `--churn`; each cycle publishes `--publishes`
broadcasts (every live client must get each one), closes the oldest cohort and opens a new one. After each cycle:
the worker's RSS, the objects in the permanent generation and in generation 2 (a census, no collection), and the
full collections of that cycle with their longest pause. Writes `--out`.json and .md.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run  # noqa: E402
import servers  # noqa: E402
from gc_probe.session_objects import snapshot  # noqa: E402
from loadgen import LoadGen  # noqa: E402

log = logging.getLogger("bench.gc_churn")


def full_collections(log_prefix: str, since: float) -> list[float]:
    """Pauses (ms) of the full collections the probe logged after `since` (its file is named by the gunicorn
    master's pid, which opened it before forking the worker)."""
    pauses = []
    for log_path in Path(log_prefix).parent.glob(Path(log_prefix).name + ".*.log"):
        for line in log_path.read_text().splitlines():
            t, gen, ms = line.split()[:3]
            if gen == "gen2" and float(t) > since:
                pauses.append(float(ms.removesuffix("ms")))
    return pauses


def churn(freeze: str, args: argparse.Namespace) -> dict[str, Any]:
    prefix = tempfile.mkdtemp(prefix="gc-churn-") + "/probe"
    env = {"LOG_LEVEL": "WARNING", "WEBSOCKET_TRANSPORT": "shared", "GC_FREEZE": freeze,
           "PYTHONPATH": str(BENCH / "gc_probe"), "BENCH_GC_COUNTS": prefix, "BENCH_GC_LOG": f"{prefix}-gc"}
    server = servers.start_signalboard(env, repo=Path(args.repo) if args.repo else servers.REPO_DIR)
    cohorts: collections.deque[LoadGen] = collections.deque()
    result: dict[str, Any] = {"GC_FREEZE": freeze, "cycles": [], "missed": 0, "failed_connects": 0}
    try:
        worker = servers.process_tree(server.pid)[1]
        publisher = run.Publisher(server)

        def open_cohort() -> None:
            lg = LoadGen(1)
            opened = lg.open("127.0.0.1", server.port, args.churn, auth=server.auth, subscribe=server.subscribe,
                             timeout=120)
            result["failed_connects"] += opened["failed"]
            cohorts.append(lg)

        for _ in range(args.held // args.churn):
            open_cohort()
        seq, t0 = 0, time.time()
        for cycle in range(args.cycles + 1):  # cycle 0: the clients held, before any churn
            started = time.time()
            if cycle:
                oldest = cohorts.popleft()
                oldest.close_clients(timeout=15)
                oldest.stop()
                open_cohort()
            for lg in cohorts:
                lg.reset(min_seq=seq)
            for _ in range(args.publishes):
                publisher.publish(seq)
                seq += 1
                time.sleep(0.05)
            alive = [lg.count()["alive"] for lg in cohorts]
            expected = args.publishes * sum(alive)
            received = sum(lg.wait_received(args.publishes * n, timeout=30)["received"]
                           for lg, n in zip(cohorts, alive, strict=True))
            result["missed"] += max(0, expected - received)
            time.sleep(args.settle)
            census = snapshot(prefix, worker, f"c{cycle}", "census")
            pauses = full_collections(f"{prefix}-gc", started)
            row = {"cycle": cycle, "t_s": round(time.time() - t0, 1), "rss_mib": round(
                servers.tree_status(worker)["rss_kib"] / 1024, 1), "frozen": census["frozen"],
                "gen2": census["generations"][2], "full_collections": len(pauses),
                "longest_full_ms": max(pauses, default=0.0), "received": received, "expected": expected}
            result["cycles"].append(row)
            log.info("GC_FREEZE=%s %s", freeze, row)
        publisher.close()
    finally:
        for lg in cohorts:
            lg.stop()
        server.stop()
    return result


def write(report: dict[str, Any], out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [f"# Connect/close churn (bench/gc_churn.py, {report['started']})", "",
             f"{report['args']['held']} clients held in cohorts of {report['args']['churn']}; each cycle closes the "
             f"oldest cohort, opens a new one and publishes {report['args']['publishes']} broadcasts.", ""]
    for run_ in report["runs"]:
        lines += [f"## GC_FREEZE={run_['GC_FREEZE']} (missed deliveries {run_['missed']}, failed connects "
                  f"{run_['failed_connects']})", "",
                  "| cycle | RSS (MiB) | frozen objects | generation 2 | full collections | longest (ms) |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {c['cycle']} | {c['rss_mib']} | {c['frozen']:,} | {c['gen2']:,} | {c['full_collections']} | "
                  f"{c['longest_full_ms']:.0f} |" for c in run_["cycles"]]
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held", type=int, default=3000)
    parser.add_argument("--churn", type=int, default=1000, help="clients closed and opened per cycle")
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--publishes", type=int, default=10, help="broadcasts per cycle")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before each cycle's figures")
    parser.add_argument("--settings", default="1,0", help="GC_FREEZE values, one server each")
    parser.add_argument("--repo", default="", help="another checkout to start the servers from")
    parser.add_argument("--out", default="/tmp/gc-churn")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    servers.raise_fd_limit()
    report = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args),
              "runs": [churn(freeze, args) for freeze in args.settings.split(",")]}
    write(report, Path(args.out))
    print(Path(args.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
