"""The demo feeds: a price ticker and job progress published through the hub, as a backend's HTTP publish is."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from hub import Hub
from hub.errors import HubError
from utils.background import StartTask

log = logging.getLogger(__name__)

TICKER_CHANNEL = "demo.ticker"
JOBS_CHANNEL = "demo.jobs"
INTERVAL = 1.0  # seconds between rounds; each round publishes one message to each feed


class DemoPublisher:
    """One background task started on the server's first request (a CLI command's app never runs it) and stopped
    by the drain."""

    TASK = "demo publisher"

    def __init__(self, hub: Hub, start_task: StartTask, interval: float = INTERVAL,
                 seed: int | None = None) -> None:
        self.hub = hub
        self.interval = interval
        self._start_task = start_task  # utils.drain.BackgroundTasks.start: SIGTERM stops the feeds
        self._random = random.Random(seed)
        self._lock = threading.Lock()  # guards _task, so concurrent first requests start one task
        self._task: Any = None
        self._stop = threading.Event()
        self.failures = 0  # publishes the hub refused (queue full, Redis down): logged, and the feed goes on
        self._price = 100.0
        self._job = 0
        self._progress = 100

    def ensure_started(self) -> None:
        if self._task is not None or self._stop.is_set():
            return
        with self._lock:
            if self._task is None and not self._stop.is_set():
                self._task = self._start_task(self.TASK, self._run, self.stop)

    def stop(self) -> None:
        """Ends the task within one interval; waits for it briefly (drain stop callbacks must return quickly)."""
        self._stop.set()
        with self._lock:
            task = self._task
        if task is not None and hasattr(task, "join"):
            task.join(timeout=self.interval + 1)

    @property
    def running(self) -> bool:
        return self._task is not None and bool(getattr(self._task, "is_alive", lambda: False)())

    def next_messages(self) -> list[tuple[str, str, dict[str, Any]]]:
        """One round: (channel, event, data) for each feed."""
        change = round(self._random.uniform(-1.5, 1.5), 2)
        self._price = round(max(1.0, self._price + change), 2)
        messages = [(TICKER_CHANNEL, "tick", {"symbol": "SBRD", "price": self._price, "change": change})]
        if self._progress >= 100:
            self._job += 1
            self._progress = 0
            messages.append((JOBS_CHANNEL, "started", {"job": self._job, "progress": 0}))
        else:
            self._progress = min(100, self._progress + self._random.choice((10, 20, 25)))
            event = "done" if self._progress == 100 else "progress"
            messages.append((JOBS_CHANNEL, event, {"job": self._job, "progress": self._progress}))
        return messages

    def _run(self) -> None:
        log.info("demo publisher started: %s, %s", TICKER_CHANNEL, JOBS_CHANNEL)
        while not self._stop.is_set():
            for channel, event, data in self.next_messages():
                try:
                    self.hub.publish(channel, event, data)
                except HubError as exc:
                    self.failures += 1
                    log.warning("demo publish to %s refused: %s", channel, exc.message)
            self._stop.wait(self.interval)
        log.info("demo publisher stopped")
