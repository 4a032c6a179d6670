"""Webhook and authorization-hook figures for docs/webhooks.md: connect and publish latency with no webhooks vs
webhooks to a receiver that is down (timing out), the connect latency the authorization hook adds, and events/s
delivered when a receiver comes back to a backlog (memory and Redis queues).

    .venv/bin/python bench/webhooks.py [--cycles 200] [--backlog 3000] [--out docs/webhooks-bench.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from tests.hub.realtime_client import Api, HubClient, unique  # noqa: E402
from tests.scale.processes import RedisProcess  # noqa: E402
from tests.server import ServerProcess  # noqa: E402
from tests.webhooks.support import SECRET, Receiver, compare, of_type  # noqa: E402


def drain_rate(receiver: Receiver, server: ServerProcess, count: int) -> dict[str, float]:
    """Queue `count` message.published events while the receiver is down, bring it back, and time the drain."""
    room = unique("rate")
    client = HubClient(server.url).connect({"token": Api(server).token("bench", [room], publish=[room])})
    assert client.call("subscribe", {"channel": room})["ok"]
    receiver.wait_events(lambda es: of_type(es, "subscription.created"), what="the subscription")
    receiver.stop()
    for i in range(count):
        assert client.call("publish", {"channel": room, "event": "n", "data": i})["ok"]
    time.sleep(1.5)  # every attempt so far refused; the deliverer is backing off (at most WEBHOOK_RETRY_MAX_MS)
    started = time.monotonic()
    receiver.start()
    events = receiver.wait_events(lambda es: len({e["offset"] for e in of_type(es, "message.published")}) >= count,
                                  timeout=300,
                                  what="the backlog")
    took = time.monotonic() - started
    client.disconnect()
    published = of_type(events, "message.published")
    return {"events": len(published), "seconds": round(took, 2), "events_per_second": round(count / took, 1),
            "posts": len(receiver.entries()), "in_order": [e["offset"] for e in published] == list(range(1, count + 1))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=3000, help="events queued while the receiver is down")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, object] = {"cycles": args.cycles}
    down, up, up_redis, hook = (Receiver().start() for _ in range(4))
    redis_server = RedisProcess().start()
    down.control(delay=30)  # accepts, then never answers in time: every attempt times out
    hook.control(auth={"connect": {"status": 200, "body": {"sub": "bench", "channels": ["bench.*"],
                                                           "publish": ["bench.*"]}}})
    common: dict[str, Any] = {"WEBHOOK_SECRET": SECRET, "CLIENT_RATE_LIMIT": 0, "LOG_LEVEL": "WARNING"}
    servers = [
        ServerProcess(**common),
        ServerProcess(WEBHOOK_URLS=down.hook_url, WEBHOOK_TIMEOUT_MS=1000, **common),
        ServerProcess(WEBHOOK_URLS=up.hook_url, WEBHOOK_BATCH_MS=50, WEBHOOK_RETRY_MAX_MS=500, **common),
        ServerProcess(AUTH_HOOK_URL=hook.url + "/auth", **common),
        ServerProcess(WEBHOOK_URLS=up_redis.hook_url, WEBHOOK_BATCH_MS=50, WEBHOOK_RETRY_MAX_MS=500,
                      REDIS_URL=redis_server.url, **common),
    ]
    try:
        for server in servers:
            server.start()
        plain, receiver_down, receiver_up, with_hook, receiver_up_redis = servers

        def token_for(server: ServerProcess):
            return lambda room: {"token": Api(server).token("bench", [room], publish=[room])}

        results["receiver_down"] = compare({"no_webhooks": (plain, token_for(plain)),
                                            "webhooks_receiver_down": (receiver_down, token_for(receiver_down))},
                                           args.cycles)
        results["auth_hook"] = compare({"token": (plain, token_for(plain)), "auth_hook": (with_hook, {})},
                                       args.cycles)
        results["drain_memory_queue"] = drain_rate(up, receiver_up, args.backlog)
        results["drain_redis_queue"] = drain_rate(up_redis, receiver_up_redis, args.backlog)
    finally:
        for server in servers:
            server.__exit__(None, None, None)
        for receiver in (down, up, up_redis, hook):
            receiver.close()
        redis_server.close()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
