"""Where a server's threads spend their time, from inside the process, when py-spy cannot attach.

py-spy needs ptrace to suspend the process (refused in some containers) and takes a minute to read 4000 thread
stacks without suspending. This samples `sys._current_frames()` from a daemon thread instead and writes the
commonest stacks of the main thread (gunicorn's accept loop and heartbeat) and of all threads to a file.

Signalboard: `SIGNALBOARD_APP='bench.stack_sampler:create_app()' BENCH_STACKS_FILE=/tmp/stacks.txt ./start.sh`
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

INTERVAL = float(os.environ.get("BENCH_STACKS_INTERVAL", "0.1"))
DEPTH = 8


def _stack(frame: Any) -> str:
    frames = traceback.extract_stack(frame)[-DEPTH:]
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames))


def _sample_forever(path: str) -> None:
    main_id = threading.main_thread().ident
    main_stacks: Counter[str] = Counter()
    all_tops: Counter[str] = Counter()
    samples = 0
    last_write = time.monotonic()
    gaps: list[float] = []
    last = time.monotonic()
    while True:
        time.sleep(INTERVAL)
        now = time.monotonic()
        # A late wake-up shows how long this thread waited for the GIL.
        gaps.append(now - last - INTERVAL)
        last = now
        frames = sys._current_frames()
        samples += 1
        if main_id in frames:
            main_stacks[_stack(frames[main_id])] += 1
        for ident, frame in frames.items():
            if ident != threading.get_ident():
                all_tops[_stack(frame).split(" <- ")[0]] += 1
        if now - last_write >= 2.0:
            last_write = now
            worst = sorted(gaps)[-5:]
            lines = [f"{samples} samples, {len(frames)} threads; worst sampler wake-up delays (s): {worst}", "",
                     "main thread:"]
            lines += [f"{n:6d}  {stack}" for stack, n in main_stacks.most_common(10)]
            lines += ["", "innermost frame over all threads:"]
            lines += [f"{n:8d}  {top}" for top, n in all_tops.most_common(25)]
            tmp = path + ".tmp"
            with open(tmp, "w") as out:
                out.write("\n".join(lines) + "\n")
            os.replace(tmp, path)


def start(path: str) -> None:
    threading.Thread(target=_sample_forever, args=(path,), name="bench-stack-sampler", daemon=True).start()


def create_app() -> Any:
    """Signalboard's factory, with the sampler running in the worker."""
    sys.path.insert(0, os.getcwd())
    from app import create_app as signalboard_factory

    start(os.environ.get("BENCH_STACKS_FILE", "/tmp/bench-stacks.txt"))
    return signalboard_factory()
