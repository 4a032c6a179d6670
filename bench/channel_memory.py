"""Memory kept by channels whose messages have aged out (issue 14, item 12): the hub's memory stores, in process.

    .venv/bin/python bench/channel_memory.py [--channels 100000]

Publishes one message to each of N fresh channels through the hub's own services (memory history and presence, as
without REDIS_URL), lets them age out (HISTORY_MAX_AGE=1), lists the channels as GET /api/v1/channels does, and
prints the Python heap held (tracemalloc) and the process RSS at each step, then the same for a second round of N
other channels (RSS the first round could not give back is reused, or not).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path

import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blueprints.realtime.services import build_services  # noqa: E402
from config import load_config  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def figures(label: str, baseline: int) -> dict[str, float | str]:
    gc.collect()
    heap, _ = tracemalloc.get_traced_memory()
    return {"step": label, "heap_mib": round((heap - baseline) / 2**20, 1), "rss_mib": round(rss_mib(), 1)}


def _no_tasks(name: str, target: object, stop: object) -> None:
    raise RuntimeError(f"the measurement starts no background task ({name})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=100_000)
    args = parser.parse_args()
    config = load_config(environ={"SIGNALBOARD_ENV": "development", "HISTORY_MAX_AGE": "1"})
    # The hub alone, on a server that never runs: appends start no background task.
    hub = build_services(config, socketio.Server(async_mode="threading"), _no_tasks).hub
    tracemalloc.start()
    gc.collect()
    baseline, _ = tracemalloc.get_traced_memory()
    steps = [figures("start", baseline)]
    for round_ in (1, 2):
        for n in range(args.channels):
            hub.history.append(f"round{round_}.channel{n}", "tick", {"n": n, "text": "x" * 64})
        steps.append(figures(f"round {round_}: {args.channels} channels, one message each", baseline))
        time.sleep(1.2)  # past HISTORY_MAX_AGE: every message has aged out
        listed = len(hub.channel_summaries())
        steps.append(figures(f"round {round_}: aged out, channels listed ({listed} with messages)", baseline))
    print(json.dumps(steps, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
