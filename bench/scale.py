"""Scale-out benchmark: subscribers on one instance, and on two instances behind nginx sharing Redis.

    python bench/scale.py                      # 1000 subscribers, the three scenarios below, one run each
    python bench/scale.py --clients 500 --reps 3 --scenarios single,pair-nginx

Scenarios (every process fresh, on 127.0.0.1, ended by PID):
  single        one instance, no Redis: the in-process hub (the baseline)
  single-redis  one instance with REDIS_URL: what the Redis message queue costs one instance
  pair-nginx    two instances with REDIS_URL behind nginx (deploy/nginx.conf); subscribers spread over both

Each run: spaced publishes (latency at rest), then a burst published back to back over one HTTP connection
(delivered messages per second, latency under load, CPU seconds per 10k deliveries of every process). All
load-generator clients come from 127.0.0.1, so nginx's `ip_hash` would send them all to one instance; the
benchmark's nginx balances websocket connections with `hash $remote_addr$remote_port consistent` instead
(websocket-only clients need no stickiness). Writes docs/scale-report.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

import servers  # noqa: E402
from loadgen import LoadGen, percentile  # noqa: E402
from run import Publisher, _latency_stats, _log_errors  # noqa: E402

from tests.scale.processes import NginxProcess, RedisProcess  # noqa: E402

log = logging.getLogger("bench.scale")

SCENARIOS = ("single", "single-redis", "pair-nginx")
PER_CONNECTION_BALANCE = "hash $remote_addr$remote_port consistent"


@dataclasses.dataclass
class Deployment:
    instances: list[servers.Server]
    entry: servers.Server  # where clients connect and the publisher posts (an instance, or nginx in front)
    redis: RedisProcess | None = None
    proxy: NginxProcess | None = None

    def cpu(self) -> dict[str, float]:
        seconds = {s.name: servers.tree_cpu_seconds(s.pid) for s in self.instances}
        if self.redis is not None and self.redis.process is not None:
            seconds["redis"] = servers.tree_cpu_seconds(self.redis.process.pid)
        if self.proxy is not None and self.proxy.process is not None:
            seconds["nginx"] = servers.tree_cpu_seconds(self.proxy.process.pid)
        return seconds

    def clients_per_instance(self) -> dict[str, int]:
        counts = {}
        for server in self.instances:
            _, body = servers.http_request(server.port, "GET", "/readyz", timeout=10)
            counts[server.name] = sum(json.loads(body)["clients"].values())  # websocket + polling sessions
        return counts

    def stop(self) -> None:
        for server in self.instances:
            server.stop()
        if self.proxy is not None:
            self.proxy.close()
        if self.redis is not None:
            self.redis.close()


def deploy(scenario: str, threads: int) -> Deployment:
    env = {"GUNICORN_THREADS": str(threads), "API_RATE_LIMIT": "0", "FANOUT_QUEUE_SIZE": "100000"}
    if scenario == "single":
        server = servers.start_signalboard(env)
        server.name = "instance-1"
        return Deployment([server], server)
    redis = RedisProcess(durable=False).start()
    env |= {"REDIS_URL": redis.url, "REDIS_KEY_PREFIX": f"bench{os.getpid()}"}
    count = 1 if scenario == "single-redis" else 2
    instances = []
    try:
        for n in range(count):
            server = servers.start_signalboard(env | {"INSTANCE_ID": f"bench-{n + 1}"})
            server.name = f"instance-{n + 1}"
            instances.append(server)
        if count == 1:
            return Deployment(instances, instances[0], redis)
        proxy = NginxProcess([s.port for s in instances], balance=PER_CONNECTION_BALANCE, limits=False).start()
        entry = dataclasses.replace(instances[0], name="nginx", port=proxy.port)
        return Deployment(instances, entry, redis, proxy)
    except BaseException:
        for server in instances:
            server.stop()
        redis.close()
        raise


def wait_ready(deployment: Deployment, timeout: float = 60.0) -> None:
    for server in deployment.instances:
        deadline = time.time() + timeout
        while True:
            status, body = servers.http_request(server.port, "GET", "/readyz", timeout=10)
            if status == 200:
                break
            if time.time() > deadline:
                raise RuntimeError(f"{server.name} not ready: {body[:300]!r}")
            time.sleep(0.2)


def measure(scenario: str, cfg: argparse.Namespace) -> dict[str, Any]:
    deployment = deploy(scenario, cfg.threads)
    out: dict[str, Any] = {"scenario": scenario, "clients": cfg.clients, "loadavg_1m": os.getloadavg()[0]}
    publisher = Publisher(deployment.entry)
    try:
        wait_ready(deployment)
        with LoadGen(cfg.processes) as lg:
            opened = lg.open("127.0.0.1", deployment.entry.port, cfg.clients, auth=deployment.entry.auth,
                             subscribe=deployment.entry.subscribe, timeout=30 + cfg.clients / 20)
            n = opened["connected"]
            out["connected"] = n
            out["connect_errors"] = opened["errors"]
            if not n:
                return out
            time.sleep(1.0)
            out["clients_per_instance"] = deployment.clients_per_instance()

            lg.reset()
            for seq in range(cfg.spaced):
                publisher.publish(seq)
                time.sleep(cfg.spaced_interval)
            lg.wait_received(n * cfg.spaced, timeout=60)
            out["spaced"] = _latency_stats(lg.collect(), n * cfg.spaced)

            lg.reset()
            publisher.call_ms = []
            cpu0, t0 = deployment.cpu(), time.time()
            for seq in range(cfg.spaced, cfg.spaced + cfg.burst):
                publisher.publish(seq)
            published_s = time.time() - t0
            lg.wait_received(n * cfg.burst, timeout=180)
            cpu1 = deployment.cpu()
            col = lg.collect()
            burst = _latency_stats(col, n * cfg.burst)
            span = col["last_recv"] - t0 if col["received"] else float("nan")
            burst["delivered_per_s"] = col["received"] / span if col["received"] else 0.0
            burst["publish_calls_s"] = published_s
            burst["publish_call_p50_ms"] = percentile(sorted(publisher.call_ms), 50)
            burst["publish_call_p99_ms"] = percentile(sorted(publisher.call_ms), 99)
            per_10k = {name: (cpu1[name] - cpu0[name]) / col["received"] * 1e4 if col["received"] else float("nan")
                       for name in cpu1}
            burst["cpu_s_per_10k"] = per_10k
            burst["cpu_s_per_10k_total"] = sum(per_10k.values())
            # Duplicates or gaps would show as a sequence number received more or less than once per client.
            seqs = col["seq_counts"]
            burst["exactly_once"] = all(seqs.get(s, 0) == n for s in range(cfg.spaced, cfg.spaced + cfg.burst))
            out["burst"] = burst
            out["publish_errors"] = publisher.errors
            lg.close_clients(timeout=30)
    finally:
        publisher.close()
        out["server_log_errors"] = [e for s in deployment.instances for e in _log_errors(s)]
        deployment.stop()
    return out


def table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| scenario | clients (per instance) | delivered msgs/s | burst p50 / p99 ms | spaced p50 / p99 ms "
        "| CPU s per 10k deliveries (per process) | exactly once |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        burst, spaced = run.get("burst", {}), run.get("spaced", {})
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in burst.get("cpu_s_per_10k", {}).items())
        rows.append(
            f"| {run['scenario']} | {run.get('connected')} ({run.get('clients_per_instance')}) "
            f"| {burst.get('delivered_per_s', float('nan')):.0f} "
            f"| {burst.get('p50_ms', float('nan')):.0f} / {burst.get('p99_ms', float('nan')):.0f} "
            f"| {spaced.get('p50_ms', float('nan')):.1f} / {spaced.get('p99_ms', float('nan')):.1f} "
            f"| {cpu} | {burst.get('exactly_once')} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="Scale-out benchmark (see the module docstring).")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--spaced", type=int, default=20)
    parser.add_argument("--spaced-interval", type=float, default=0.1)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1200, help="GUNICORN_THREADS of each instance")
    parser.add_argument("--processes", type=int, default=4, help="load generator processes")
    parser.add_argument("--out", default=str(servers.REPO_DIR / "docs" / "scale-report.json"))
    cfg = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    runs = []
    for rep in range(cfg.reps):
        for scenario in cfg.scenarios.split(","):
            log.info("%s, %d clients, run %d/%d", scenario, cfg.clients, rep + 1, cfg.reps)
            run = measure(scenario, cfg)
            log.info("%s", json.dumps(run, default=str))
            runs.append(run)
    report = {"command": " ".join(["python bench/scale.py", *sys.argv[1:]]), "config": vars(cfg),
              "nproc": os.cpu_count(), "runs": runs}
    Path(cfg.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
