"""Counts, deterministically, what held websocket sessions and broadcasts cost the garbage collector.

    python bench/gc_probe/session_objects.py --clients 1000 --publishes 200
    python bench/gc_probe/session_objects.py --repo /tmp/main-copy     # another checkout (a baseline)

Starts Signalboard (shared transport, its defaults, as the benchmarks do) with this directory's sitecustomize.py
answering snapshot requests in the gunicorn worker, then: warms up with a few clients; counts every GC-tracked
object by type; connects `--clients` more (subscribed to the bench channel) and counts again (the difference over
the clients is the per-session cost); frees any cyclic garbage so far, publishes `--publishes` broadcasts with
the clients held and has a full collection report what it found unreachable (cyclic garbage, by type: what
refcounting could not free per publish or per delivery); closes the clients with automatic full collections held
off, and has a full collection report what the closed sessions left as cycles; counts again (what stayed).
Counts, not timings: they do not depend on the machine's load. More than 500 clients: hold the benchmark lock.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))

import run  # noqa: E402
import servers  # noqa: E402
from loadgen import LoadGen  # noqa: E402

log = logging.getLogger("bench.session_objects")


def snapshot(prefix: str, worker: int, label: str, mode: str = "tracked", timeout: float = 120) -> dict[str, Any]:
    """Ask the worker's probe for a snapshot and wait for its answer."""
    Path(f"{prefix}.request").write_text(f"{label} {mode}\n")
    answer = Path(f"{prefix}.{worker}.{label}.json")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if answer.exists():
            return json.loads(answer.read_text())
        time.sleep(0.1)
    raise TimeoutError(f"no {label} snapshot from worker {worker}")


def per_session(before: dict[str, int], after: dict[str, int], n: int, top: int = 30) -> dict[str, float]:
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    return {k: round(v / n, 2) for k, v in sorted(grown.items(), key=lambda kv: -abs(kv[1]))[:top] if v}


def steady(prefix: str, worker: int, publisher: run.Publisher, args: argparse.Namespace) -> dict[str, Any]:
    """Broadcasts flowing for `--steady` s with the clients held (it starts right after a full collection): the
    automatic collections per generation meanwhile, the full ones logged (count, pauses, what they collected) and
    what was promoted into generation 2 between them."""
    first = snapshot(prefix, worker, "steady-start", "stats")
    t0 = time.time()
    seq = 100000
    while time.time() - t0 < args.steady:
        publisher.publish(seq)
        seq += 1
        time.sleep(args.steady_interval)
    t1 = time.time()
    last = snapshot(prefix, worker, "steady-end", "stats")
    fulls = []
    for path in Path(prefix).parent.glob("probe-gc.*.log"):
        for line in path.read_text().splitlines():
            stamp, gen, ms, collected = line.split()
            if gen == "gen2" and t0 <= float(stamp) <= t1:
                fulls.append({"ms": float(ms[:-2]), "collected": int(collected.split("=")[1])})
    growth = [json.loads(line) for path in Path(prefix).parent.glob("probe-gc.*.growth")
              for line in path.read_text().splitlines()]
    growth = [g for g in growth if t0 <= g["t"] <= t1]
    minutes = (t1 - t0) / 60
    return {"seconds": round(t1 - t0, 1), "publishes": seq - 100000,
            "collections_by_generation": [b["collections"] - a["collections"]
                                          for a, b in zip(first["stats"], last["stats"], strict=True)],
            "full_collections": len(fulls), "full_per_minute": round(len(fulls) / minutes, 2),
            "pause_ms": sorted(f["ms"] for f in fulls), "collected": [f["collected"] for f in fulls],
            "between_full_collections": growth}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    prefix = tempfile.mkdtemp(prefix="gc-objects-") + "/probe"
    env = {"LOG_LEVEL": "WARNING", "WEBSOCKET_TRANSPORT": "shared", "PYTHONPATH": str(Path(__file__).parent),
           "BENCH_GC_COUNTS": prefix, "BENCH_GC_LOG": f"{prefix}-gc", "BENCH_GC_GROWTH": "1",
           "GC_FREEZE": "0"}  # its censuses see the three generations, not the permanent one
    server = servers.start_signalboard(env, repo=Path(args.repo) if args.repo else servers.REPO_DIR)
    result: dict[str, Any] = {"clients": args.clients, "publishes": args.publishes}
    try:
        worker = servers.process_tree(server.pid)[1]
        with LoadGen(args.processes) as lg:
            warm = lg.open("127.0.0.1", server.port, args.warmup, auth=server.auth, subscribe=server.subscribe)
            publisher = run.Publisher(server)
            for seq in range(5):
                publisher.publish(seq)
            lg.wait_received(5 * warm["connected"], 30, idle=2)
            mode = "detail" if args.detail else "tracked"
            base = snapshot(prefix, worker, "base", mode)
            opened = lg.open("127.0.0.1", server.port, args.clients, auth=server.auth, subscribe=server.subscribe,
                             timeout=300)
            n = opened["connected"]
            held = snapshot(prefix, worker, "held", mode)
            if args.detail:
                result["per_session_detail"] = per_session(base["detail"], held["detail"], max(opened["connected"], 1),
                                                           top=80)
            result |= {"connected": n, "failed": opened["failed"], "tracked_base": base["total"],
                       "tracked_held": held["total"],
                       "tracked_per_session": round((held["total"] - base["total"]) / max(n, 1), 2),
                       "per_session_by_type": per_session(base["types"], held["types"], max(n, 1))}
            cleared = snapshot(prefix, worker, "clear", "garbage")
            lg.reset(min_seq=1000)
            for seq in range(1000, 1000 + args.publishes):
                publisher.publish(seq)
                time.sleep(args.interval)
            counts = lg.wait_received(args.publishes * (n + warm["connected"]), 120, idle=5)
            garbage = snapshot(prefix, worker, "garbage", "garbage")
            result |= {"received": counts["received"], "dropped": counts["dropped"],
                       "cyclic_garbage_after_publishes": garbage["collected"],
                       "cyclic_garbage_per_publish": round(garbage["collected"] / max(args.publishes, 1), 2),
                       "cyclic_garbage_by_type": dict(list(garbage["types"].items())[:30]),
                       # gc.collect() counts as a generation-2 collection: those of generations 0 and 1 are the
                       # automatic ones, i.e. net allocations of tracked objects (700 per generation-0 collection).
                       # Every collection's `collected` (the automatic ones free young cyclic garbage before the
                       # snapshot's collection sees it), minus what the clearing snapshot's own collections found.
                       "cyclic_garbage_all_generations_per_publish": round(
                           (sum(g["collected"] for g in garbage["stats"])
                            - sum(c["collected"] for c in cleared["stats"])
                            ) / max(args.publishes, 1), 2),
                       "collections_per_publish": [
                           round((g["collections"] - c["collections"]) / max(args.publishes, 1), 3)
                           for c, g in zip(cleared["stats"], garbage["stats"], strict=True)][:2]}
            if args.steady:
                result["steady"] = steady(prefix, worker, publisher, args)
            snapshot(prefix, worker, "before-close", "garbage")
            snapshot(prefix, worker, "no-full", "no-full")  # the closes' old cycles wait for the census below
            closed = lg.close_clients(30)
            time.sleep(args.settle)
            closed_garbage = snapshot(prefix, worker, "closed-garbage", "garbage")
            snapshot(prefix, worker, "full-on", "full-on")
            after = snapshot(prefix, worker, "closed")
            result |= {"cyclic_garbage_per_closed_session": round(closed_garbage["collected"] / max(n, 1), 2),
                       "closed_garbage_by_type": {k: round(v / max(n, 1), 2)
                                                  for k, v in list(closed_garbage["types"].items())[:25]}}
            result |= {"tracked_after_close": after["total"], "close_unanswered": closed["unanswered"],
                       "left_after_close_by_type": per_session(base["types"], after["types"], 1, top=15)}
    finally:
        server.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--publishes", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between publishes")
    parser.add_argument("--settle", type=float, default=32.0,
                        help="seconds after closing: sockets linger 2 s, a ping timer holds its socket up to 25 s")
    parser.add_argument("--steady", type=float, default=0.0, help="seconds of broadcasts after the counts")
    parser.add_argument("--steady-interval", type=float, default=0.02, help="seconds between those publishes")
    parser.add_argument("--detail", action="store_true", help="name each object and its holder (slow)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repo", help="another checkout to measure (default: this one)")
    parser.add_argument("--out", help="write the result as JSON here too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = measure(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
