"""How every layer asks for a background task: by name, with the stop the graceful shutdown will call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class StartTask(Protocol):
    """Start `target` as the background task `name` (one of utils.drain.STOP_ORDER); `stop` makes it return.

    The app's implementation is utils.drain.BackgroundTasks.start, which registers `stop` with the drain as the
    task starts, so whatever runs is stopped on SIGTERM.
    """

    def __call__(self, name: str, target: Callable[[], object], stop: Callable[[], object]) -> object: ...
