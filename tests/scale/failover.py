"""What the failover tests share (tests/scale with local processes, tests/ops under docker-compose): a steady
publisher retrying on 503, a /readyz watcher, and the delivery check of every acknowledged publish."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Protocol, Self

import requests

from tests.hub.realtime_client import Api, HubClient


class Reachable(Protocol):
    """A Signalboard base URL: a Reachable, or nginx in front of instances in containers."""

    @property
    def url(self) -> str: ...


class BackgroundLoop:
    """A test helper whose `_run` loops on a daemon thread from `start()` until `close()` (each `_run` also bounds
    itself in time)."""

    JOIN_SECONDS = 30.0

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Self:
        self.thread.start()
        return self

    def _run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop.set()
        self.thread.join(self.JOIN_SECONDS)


class Publisher(BackgroundLoop):
    """One publisher publishing steadily with idempotency keys over both instances, retrying each key on 503."""

    def __init__(self, servers: list[Reachable], channel: str, interval: float = 0.02) -> None:
        super().__init__()
        self.apis = [Api(server) for server in servers]
        self.channel = channel
        self.interval = interval  # between acknowledged publishes
        self.acked: list[tuple[int, str, str]] = []  # (offset, id, key) in acknowledgement order
        self.acked_at: list[float] = []
        self.refused: list[tuple[float, int, str]] = []  # (time, status, error code)
        self.slowest = 0.0

    def _run(self) -> None:
        n = 0
        deadline = time.monotonic() + 240  # bounded whatever happens
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.publish(f"m{n}", {"n": n}, deadline, rotate=n)
            n += 1
            time.sleep(self.interval)

    def publish(self, key: str, data: object, deadline: float, rotate: int = 0) -> dict | None:
        """Publish until acknowledged (None if stopped or past `deadline`), retrying the same key on 503."""
        body = {"channel": self.channel, "event": "tick", "data": data, "idempotency_key": key}
        attempt = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            api = self.apis[(rotate + attempt) % len(self.apis)]  # a retry may land on the other instance
            attempt += 1
            started = time.monotonic()
            try:
                response = api.post("/publish", body)
            except requests.RequestException as exc:
                self.refused.append((time.monotonic(), 0, type(exc).__name__))
                continue
            finally:
                self.slowest = max(self.slowest, time.monotonic() - started)
            if response.status_code == 200:
                answer = response.json()
                self.acked.append((answer["offset"], answer["id"], key))
                self.acked_at.append(time.monotonic())
                return answer
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):  # not the app's error body (a proxy's page): kept, not fatal
                code = f"HTTP {response.status_code}: {response.text[:80]}"
            self.refused.append((time.monotonic(), response.status_code, code))
            time.sleep(0.05)
        return None

    def acked_since(self, moment: float) -> int:
        return sum(1 for at in self.acked_at if at > moment)


class ReadyzWatcher(BackgroundLoop):
    """Polls /readyz of every instance, keeping each distinct (instance, status, redis reason) it saw."""

    JOIN_SECONDS = 10.0

    def __init__(self, servers: list[Reachable]) -> None:
        super().__init__()
        self.servers = servers
        self.seen: list[tuple[float, int, int, str]] = []  # (time, instance index, status, reasons.redis)

    def _run(self) -> None:
        deadline = time.monotonic() + 240
        while not self.stop.is_set() and time.monotonic() < deadline:
            for index, server in enumerate(self.servers):
                try:
                    response = requests.get(server.url + "/readyz", timeout=5)
                    self.seen.append((time.monotonic(), index, response.status_code,
                                      response.json().get("reasons", {}).get("redis", "")))
                except requests.RequestException as exc:
                    self.seen.append((time.monotonic(), index, 0, type(exc).__name__))
            self.stop.wait(0.2)


def received(client: HubClient, channel: str) -> list[tuple[int, str]]:
    return [(d.meta["offset"], d.meta["id"]) for d in client.deliveries(channel) if d.meta is not None]


def resyncs(client: HubClient) -> list[dict]:
    return [d.data for d in client.deliveries() if d.event == "signalboard:resync"]


def check_delivery(client: HubClient, server: Reachable, channel: str, publisher: Publisher, epoch: str) -> bool:
    """Every acknowledged publish reached `client` once and in order (live, or after a resync through history);
    no offset carries two messages; a changed epoch was told. Returns whether the epoch changed."""
    acked = [(offset, mid) for offset, mid, _ in publisher.acked]
    client.wait_for(lambda: {a for a in acked} <= set(received(client, channel)) or resyncs(client), timeout=20,
                    what="every acknowledged message or a resync")
    seen = received(client, channel)
    told = resyncs(client)
    if told:  # what the client does when told: read the channel's history again, by offset
        page = Api(server).get(f"/channels/{channel}/history", params={"since": 0}).json()
        known = {offset for offset, _ in seen}
        seen = sorted(set(seen) | {(m["offset"], m["id"]) for m in page["messages"] if m["offset"] not in known})
    offsets = [offset for offset, _ in seen]
    assert offsets == sorted(set(offsets)), "an offset came twice or out of order"
    assert [a for a in seen if a in set(acked)] == acked, "acknowledged messages missing, repeated or out of order"
    # Since-recovery with the epoch of the first subscribe: recovered exactly when the numbering is the same life.
    assert client.call("unsubscribe", {"channel": channel})["ok"] is True
    again = client.call("subscribe", {"channel": channel, "since": offsets[-1], "epoch": epoch})
    assert again["ok"] is True, again
    changed = again["epoch"] != epoch
    assert again["recovered"] is (not changed), again
    return changed


# Where the failover tests append their figures (one JSON object per line) when set, for docs/scale.md.
FIGURES = os.environ.get("SIGNALBOARD_FAILOVER_FIGURES")


def record(figures: dict) -> None:
    print(json.dumps(figures))
    if FIGURES:
        with Path(FIGURES).open("a") as out:
            out.write(json.dumps(figures) + "\n")
