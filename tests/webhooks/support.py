"""The webhook tests' receiver process (receiver.py, started and ended by PID) and what it recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tests.hub.realtime_client import HubClient, unique
from tests.server import ServerProcess, free_port

HERE = Path(__file__).resolve().parent
SECRET = "webhook-test-secret-0123456789"


def verify(entry: dict[str, Any], secret: str = SECRET, window: float = 300) -> dict[str, Any]:
    """Check a recorded request's signature and timestamp independently of the server's code; return its body."""
    headers = {k.lower(): v for k, v in entry["headers"].items()}
    timestamp = headers["x-signalboard-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.{entry['body']}".encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-signalboard-signature"], f"sha256={expected}"), "bad signature"
    assert abs(time.time() - int(timestamp)) < window
    assert headers["content-type"] == "application/json"
    return json.loads(entry["body"])


class Receiver:
    """One receiver.py run on a fixed port (so it can be stopped and started again as "the same" receiver)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.record = Path(tempfile.mkstemp(prefix="receiver-", suffix=".jsonl")[1])
        self.process: subprocess.Popen | None = None

    @property
    def hook_url(self) -> str:
        return self.url + "/hook"

    def start(self) -> Receiver:
        self.process = subprocess.Popen([sys.executable, str(HERE / "receiver.py"), str(self.port), str(self.record)],
                                        stdout=subprocess.PIPE, start_new_session=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready"
        return self

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            if self.process.stdout is not None:
                self.process.stdout.close()
        self.process = None

    def control(self, **behaviour: Any) -> None:
        requests.post(self.url + "/_control", json=behaviour, timeout=5).raise_for_status()

    def entries(self, path: str = "/hook") -> list[dict[str, Any]]:
        lines = self.record.read_text(encoding="utf-8").splitlines() if self.record.exists() else []
        return [entry for entry in map(json.loads, lines) if entry["path"].startswith(path)]

    def accepted_events(self) -> list[dict[str, Any]]:
        """Every event of every accepted (2xx) webhook POST, signatures verified, in arrival order."""
        return [event for entry in self.entries() if entry["status"] == 200 for event in verify(entry)["events"]]

    def wait_events(self, predicate: Any, timeout: float = 20.0, what: str = "events") -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.accepted_events()
            if predicate(events):
                return events
            assert time.monotonic() < deadline, f"timed out waiting for {what}; got {[e['type'] for e in events]}"
            time.sleep(0.1)

    def close(self) -> None:
        self.stop()
        self.record.unlink(missing_ok=True)


def of_type(events: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] in types]


def webhook_env(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    """Server settings for fast tests: small batches and retries, short deadlines."""
    return {"WEBHOOK_URLS": receiver.hook_url, "WEBHOOK_SECRET": SECRET, "WEBHOOK_BATCH_MS": 100,
            "WEBHOOK_TIMEOUT_MS": 1000, "WEBHOOK_RETRY_MAX_MS": 1000, **extra}


def _quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2), "n": len(ordered)}


def cycle(server: ServerProcess, auth: dict, room: str) -> tuple[float, float]:
    """Connect (websocket), subscribe, publish, disconnect; the connect and publish round trips in seconds."""
    client = HubClient(server.url)
    started = time.monotonic()
    client.connect(auth)
    connected = time.monotonic() - started
    assert client.call("subscribe", {"channel": room})["ok"]
    started = time.monotonic()
    assert client.call("publish", {"channel": room, "event": "n", "data": 1})["ok"]
    published = time.monotonic() - started
    client.disconnect()
    return connected, published


def compare(servers: dict[str, tuple[ServerProcess, Any]], cycles: int) -> dict[str, dict]:
    """Interleaved cycles on each server, so machine noise falls on all of them alike."""
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in servers}
    rooms = {name: unique("bench") for name in servers}
    for _ in range(cycles):
        for name, (server, auth) in servers.items():
            connected, published = cycle(server, auth(rooms[name]) if callable(auth) else auth, rooms[name])
            samples[name][0].append(connected)
            samples[name][1].append(published)
    return {name: {"connect": _quantiles(c), "publish": _quantiles(p)} for name, (c, p) in samples.items()}
