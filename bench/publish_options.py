"""What idempotency keys and several channels cost a publish, measured at the history store (memory and a real
redis-server): microseconds per append without a key, with a new key, with a repeated key, and to 10 channels.

    .venv/bin/python bench/publish_options.py [--count 5000]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.history import HistoryStore, MemoryHistoryStore  # noqa: E402
from hub.redis_client import RedisKeys, connect  # noqa: E402
from hub.redis_history import RedisHistoryStore  # noqa: E402
from tests.scale.processes import RedisProcess  # noqa: E402


def per_call_us(count: int, call: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for n in range(count):
        call(n)
    return (time.perf_counter() - started) / count * 1e6


def measure(store: HistoryStore, count: int) -> dict[str, float]:
    data = {"price": 101.5, "size": 3}
    ten = [f"multi.{n}" for n in range(10)]
    return {
        "no key": per_call_us(count, lambda n: store.append_all(["plain"], "e", data)),
        "new key": per_call_us(count, lambda n: store.append_all(["keyed"], "e", data, idempotency_key=f"k{n}")),
        "repeated key": per_call_us(count, lambda n: store.append_all(["keyed"], "e", data, idempotency_key="k0")),
        "10 channels": per_call_us(count // 10, lambda n: store.append_all(ten, "e", data)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    results = {"memory": measure(MemoryHistoryStore(), args.count)}
    redis_server = RedisProcess(durable=False).start()
    try:
        store = RedisHistoryStore(connect(redis_server.url), RedisKeys(f"bench{uuid.uuid4().hex[:6]}"))
        results["redis"] = measure(store, args.count)
    finally:
        redis_server.close()
    print(f"{'store':8} " + " ".join(f"{name:>14}" for name in results["memory"]))
    for kind, figures in results.items():
        print(f"{kind:8} " + " ".join(f"{value:>11.1f} us" for value in figures.values()))


if __name__ == "__main__":
    main()
