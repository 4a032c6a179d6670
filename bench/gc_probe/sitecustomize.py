"""Benchmark probe: logs the gunicorn worker's garbage-collection pauses, to see what stops every thread at once.

Used as `PYTHONPATH=bench/gc_probe BENCH_GC_LOG=/tmp/gc python bench/perf_transport.py compare ...`: every Python
process started with that path imports this module, and in a gunicorn process (only) each full collection and
each collection over 5 ms is appended to `$BENCH_GC_LOG.<pid>.log` as `<unix time> gen<n> <ms>ms`. Without
BENCH_GC_LOG it does nothing. Never on the server's own path: for measurements only.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any

_PREFIX = os.environ.get("BENCH_GC_LOG")

if _PREFIX and any("gunicorn" in arg for arg in sys.argv):
    _out = open(f"{_PREFIX}.{os.getpid()}.log", "a", buffering=1)  # noqa: SIM115 - open for the process's life
    _started: list[float] = []

    def _record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _started[:] = [time.perf_counter()]
        elif _started:
            ms = (time.perf_counter() - _started.pop()) * 1000
            if info.get("generation") == 2 or ms > 5:
                _out.write(f"{time.time():.3f} gen{info.get('generation')} {ms:.1f}ms\n")

    gc.callbacks.append(_record)
