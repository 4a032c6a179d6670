"""What the replica wait (REDIS_MIN_REPLICAS) adds to a publish: appends to a real redis-server master with one
replica on 127.0.0.1, without WAIT and with WAIT for 1 replica; median and 99th percentile per append.

    .venv/bin/python bench/replica_wait.py [--count 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.external import history_for  # noqa: E402
from hub.redis_history import Replicas  # noqa: E402
from tests.scale.processes import RedisProcess, wait_replicas  # noqa: E402


def latencies_us(store, count: int) -> tuple[float, float]:
    data = {"price": 101.5, "size": 3}
    taken = []
    for n in range(count):
        started = time.perf_counter()
        store.append_all(["bench"], "e", data, idempotency_key=f"k{n}")
        taken.append((time.perf_counter() - started) * 1e6)
    taken.sort()
    return taken[len(taken) // 2], taken[int(len(taken) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    master = RedisProcess(durable=False).start()
    replica = RedisProcess(durable=False, extra=("--replicaof", "127.0.0.1", str(master.port))).start()
    try:
        wait_replicas(master.port, 1)
        for name, replicas in (("no wait", Replicas(0)), ("WAIT 1 replica", Replicas(1, 1000))):
            store = history_for(master.url, f"bench{uuid.uuid4().hex[:6]}", 1000, 300, replicas=replicas)
            latencies_us(store, 200)  # warm up: scripts loaded, connections open
            median, p99 = latencies_us(store, args.count)
            print(f"{name:16} median {median:7.1f} us   p99 {p99:7.1f} us")
    finally:
        replica.close()
        master.close()


if __name__ == "__main__":
    main()
