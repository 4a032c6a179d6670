"""How every layer asks for a background task: by name, with the stop the graceful shutdown will call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class StartTask(Protocol):
    """Start `target` as the background task `name` (one of utils.drain.STOP_ORDER); `stop` makes it return.

    The app's implementation is utils.drain.BackgroundTasks.start, which registers `stop` with the drain as the
    task starts, so whatever runs is stopped on SIGTERM.
    """

    def __call__(self, name: str, target: Callable[[], object], stop: Callable[[], object]) -> object: ...


class Once:
    """Says yes to the first caller only, whichever threads race: the lazy start of a background task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed = False

    def claim(self) -> bool:
        if self._claimed:  # the common case, without the lock
            return False
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True
