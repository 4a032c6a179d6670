"""Full garbage collections that scan what is new, not every session the process holds (GC_FREEZE, docs/perf.md).

CPython's full collection walks every tracked object, and a server holding 5000 websocket sessions has about
300,000 of them (46 per session plus the process's own ~70,000): each full collection stopped every thread for
200-270 ms, and one falling inside a burst of broadcasts set that burst's p99. Those objects are not garbage: the
sessions are alive, and since 639e49d a closed session is freed by refcounting, not left as a cycle.

So each full collection's survivors go to the permanent generation (`gc.freeze()`), which no collection scans, and
the next full collection scans only what was promoted since. Objects there are still freed by refcounting as
usual; what a permanent object could only lose through a cycle waits for the next thaw: when the memory held
(pymalloc's allocated blocks) has grown to THAW_GROWTH times what it was after the previous walk, everything goes
back (`gc.unfreeze()`), the next full collection walks it all once (the pause of before, that once) and its
survivors are frozen again. Memory held by such cycles is so bounded by the working set (bench/gc_churn.py measures
it under connect/close churn).
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

THAW_GROWTH = 2.0  # the memory held may grow to twice what the last walk of everything left before the next one


class SurvivorFreezer:
    """The gc callback: freezes the survivors of every full collection, and thaws when memory has grown."""

    def __init__(self, growth: float = THAW_GROWTH) -> None:
        if growth <= 1:
            raise ValueError("growth must be above 1")
        self.growth = growth
        self.thaws = 0
        # The bound, in pymalloc blocks (sys.getallocatedblocks(): a walk of the arenas, a fraction of a
        # millisecond; counting the permanent generation itself walks every object in it, a quarter of a full
        # collection). Blocks stand for the memory held, frozen cycles included, and drop as refcounting frees.
        self.thaw_at = 0
        self._thawed = False  # the next full collection walks everything: it sets the next bound

    def start(self) -> None:
        """Collect once, freeze what the process holds after start-up and follow every full collection from now."""
        gc.collect()
        gc.freeze()
        self.thaw_at = int(sys.getallocatedblocks() * self.growth)
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def stop(self) -> None:
        """Back to CPython's own behaviour (tests, and a worker that wants its objects scanned again)."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)
        gc.unfreeze()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        # The collection is over and its survivors are in the oldest generation (the young ones were merged into
        # it): freezing only moves list heads.
        gc.freeze()
        blocks = sys.getallocatedblocks()
        if self._thawed:  # this collection walked everything: what is held now is the working set
            self._thawed = False
            self.thaw_at = int(blocks * self.growth)
        elif blocks > self.thaw_at:
            # Memory has doubled since the last walk: the next full collection (CPython triggers it as usual, soon)
            # walks everything once and frees the cycles that formed among frozen objects.
            gc.unfreeze()
            self._thawed = True
            self.thaws += 1


def install_gc_policy(enabled: bool) -> SurvivorFreezer | None:
    """Called once per worker after the app is built (gunicorn.conf.py post_worker_init)."""
    if not enabled:
        return None
    freezer = SurvivorFreezer()
    freezer.start()
    log.info("garbage collection: %d start-up objects frozen, and each full collection's survivors; all walked once "
             "more when the memory held doubles (GC_FREEZE=1)", gc.get_freeze_count())
    return freezer
