"""Hold thousands of SSE streams (GET /api/v1/stream) on one Signalboard worker and measure what they cost.

The server is Signalboard through start.sh (bench/servers.py). The streams are raw sockets read by one selector
in this process, so the client side holds no thread per stream either. Measured at each step of open streams:
the server's threads (/proc, and /readyz's split: gthread pool threads, which gunicorn creates on demand up to
GUNICORN_THREADS, and all others), its RSS, /livez latency (median of 20), and for a publish to the channel every stream
is on, the time until every stream has it (median of the rounds). Prints JSON; docs/perf.md quotes a run.

    .venv/bin/python bench/sse_streams.py --streams 2000 --steps 0,500,1000,2000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import BENCH_API_KEY, http_request, raise_fd_limit, start_signalboard, tree_status  # noqa: E402

CHANNEL = "public:bench.sse"


class Streams:
    """Many SSE streams on raw sockets, counting the events each has received."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.buffers: dict[int, bytes] = {}
        self.subscribed = 0
        self.seen: dict[int, int] = {}  # fileno -> highest offset seen

    def open(self, count: int) -> None:
        request = f"GET /api/v1/stream?channel={CHANNEL} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.sendall(request)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.socks.append(sock)
            self.buffers[sock.fileno()] = b""
            self.seen[sock.fileno()] = 0
            if len(self.socks) % 100 == 0:
                self.pump(0.0)

    def pump(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            sock = key.fileobj
            if not isinstance(sock, socket.socket):
                continue  # only the streams' sockets are registered
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                self.selector.unregister(sock)
                continue
            fd = sock.fileno()
            buf = self.buffers[fd] + data
            *events, self.buffers[fd] = buf.split(b"\n\n")
            for event in events:
                if b"event: signalboard:subscribed" in event:
                    self.subscribed += 1
                elif b'"offset":' in event and b"event: tick" in event:
                    offset = int(event.split(b'"offset":', 1)[1].split(b",", 1)[0])
                    self.seen[fd] = max(self.seen[fd], offset)

    def wait(self, done, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            self.pump(0.05)
        return True

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.selector.close()


def livez_ms(port: int, count: int = 20) -> float:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        status, _ = http_request(port, "GET", "/livez")
        assert status == 200
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--steps", default="0,500,1000,2000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    raise_fd_limit()
    steps = sorted({int(s) for s in args.steps.split(",")} | {args.streams})
    server = start_signalboard({"CLIENT_RATE_LIMIT": "0", "API_RATE_LIMIT": "0", "LOG_LEVEL": "WARNING"})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    streams = Streams(server.port)
    results = []
    offset = 0
    try:
        for step in steps:
            streams.open(step - len(streams.socks))
            subscribed = streams.wait(lambda step=step: streams.subscribed >= step, 120)
            assert subscribed, f"{streams.subscribed}/{step} subscribed"
            fanout = []
            for _ in range(args.rounds if step else 0):
                offset += 1
                start = time.perf_counter()
                status, _ = http_request(server.port, "POST", "/api/v1/publish",
                                         {"channel": CHANNEL, "event": "tick", "data": {"n": offset}},
                                         {"Authorization": f"Bearer {BENCH_API_KEY}"})
                assert status == 200
                target = offset
                everyone = streams.wait(lambda target=target: min(streams.seen.values()) >= target, 60)
                assert everyone, "a stream did not get the message"
                fanout.append((time.perf_counter() - start) * 1000)
            tree = tree_status(server.pid)
            _, body = http_request(server.port, "GET", "/readyz")
            figures = json.loads(body)
            threads = figures["threads"]  # the worker's: gthread pool threads (created on demand, bounded) and others
            row = {"streams": step, "sse_counted": figures["clients"]["sse"], "server_threads": tree["threads"],
                   "pool_threads": threads["pool"], "other_threads": threads["other"],
                   "rss_mib": round(tree["rss_kib"] / 1024, 1),
                   "livez_ms_median": livez_ms(server.port),
                   "publish_to_all_ms_median": round(statistics.median(fanout), 1) if fanout else None}
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    finally:
        streams.close()
        server.stop()
    print(json.dumps({"commit": commit, "rounds": args.rounds, "results": results}, indent=2))


if __name__ == "__main__":
    main()
