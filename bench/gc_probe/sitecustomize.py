"""Benchmark probe: logs the gunicorn worker's garbage-collection pauses, to see what stops every thread at once.

Used as `PYTHONPATH=bench/gc_probe BENCH_GC_LOG=/tmp/gc python bench/perf_transport.py compare ...`: every Python
process started with that path imports this module, and in a gunicorn process (only) each full collection and
each collection over 5 ms is appended to `$BENCH_GC_LOG.<pid>.log` as `<unix time> gen<n> <ms>ms collected=<n>`.
With BENCH_GC_GROWTH=1 as well, each full collection also appends one JSON line to `$BENCH_GC_LOG.<pid>.growth`:
the types whose count in generation 2 grew since the previous full collection ended (what was promoted and is
still alive), and the types of what generation-1 collections had in generations 0 and 1 when they started (what
they promoted, garbage aside: also objects freed since; the census adds to the pauses it logs). With
BENCH_GC_COUNTS=<prefix> the process answers snapshot requests from bench/gc_probe/session_objects.py (see
there). Without these variables it does nothing.
Never on the server's own path: for measurements only.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

_IN_GUNICORN = any("gunicorn" in arg for arg in sys.argv)
_PREFIX = os.environ.get("BENCH_GC_LOG")
_COUNTS = os.environ.get("BENCH_GC_COUNTS")


def type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def census(objects: list[Any]) -> collections.Counter[str]:
    return collections.Counter(type_name(o) for o in objects)


if _PREFIX and _IN_GUNICORN:
    _out = open(f"{_PREFIX}.{os.getpid()}.log", "a", buffering=1)  # noqa: SIM115 - open for the process's life
    _growth_out = (open(f"{_PREFIX}.{os.getpid()}.growth", "a", buffering=1)  # noqa: SIM115
                   if os.environ.get("BENCH_GC_GROWTH") else None)
    _started: list[float] = []
    _after_full: list[collections.Counter[str]] = []
    _promoted: collections.Counter[str] = collections.Counter()

    def _record(phase: str, info: dict[str, Any]) -> None:
        generation = info.get("generation")
        if phase == "start":
            # The pause ends after every callback's "stop" (the server's own GC_FREEZE callback, utils/gc_policy.py,
            # works there): _finish is kept last. Moving it during "start" is harmless: the "stop" calls come later.
            if gc.callbacks[-1] is not _finish:
                if _finish in gc.callbacks:
                    gc.callbacks.remove(_finish)
                gc.callbacks.append(_finish)
            if _growth_out is not None and generation == 1:
                # A generation-1 collection moves what survives of generations 0 and 1 into generation 2.
                _promoted.update(census(gc.get_objects(generation=0) + gc.get_objects(generation=1)))
            if _growth_out is not None and generation == 2 and _after_full:
                now = census(gc.get_objects(generation=2))
                grown = dict((now - _after_full[0]).most_common(25))
                _growth_out.write(json.dumps({"t": round(time.time(), 3), "gen2": sum(now.values()),
                                              "grown": grown, "promoted_total": sum(_promoted.values()),
                                              "promoted": dict(_promoted.most_common(25))}) + "\n")
                _promoted.clear()
            _started[:] = [time.perf_counter()]

    def _finish(phase: str, info: dict[str, Any]) -> None:
        generation = info.get("generation")
        if phase == "stop" and _started:
            ms = (time.perf_counter() - _started.pop()) * 1000
            if generation == 2 or ms > 5:
                _out.write(f"{time.time():.3f} gen{generation} {ms:.1f}ms collected={info.get('collected')}\n")
            if _growth_out is not None and generation == 2:
                _after_full[:] = [census(gc.get_objects(generation=2))]

    gc.callbacks.extend((_record, _finish))


_THRESHOLD2 = gc.get_threshold()[2]


def _snapshot(mode: str) -> dict[str, Any]:
    """`stats`: the collection counts only. `tracked`: the types of every GC-tracked object after a full collection.
    `garbage`: the types of what a full collection finds unreachable (cyclic garbage), kept for the census with
    DEBUG_SAVEALL and then freed. `detail`: `tracked`, and each object named with its holder. `no-full`/`full-on`:
    automatic full collections off or on again. `generations`: a full collection, then the objects left in each
    generation and in the permanent one (GC_FREEZE, utils/gc_policy.py); `census`: the same without the collection.
    `tracked` and the others count only the three generations: the servers they measure run with GC_FREEZE=0."""
    if mode == "stats":  # no collection: gc.get_stats() as it is (added to every answer)
        return {"count": gc.get_count()}
    if mode in ("generations", "census"):  # where objects are, after a full collection (its callbacks run) or not
        if mode == "generations":
            gc.collect()
        return {"generations": [len(gc.get_objects(generation=g)) for g in range(3)],
                "frozen": gc.get_freeze_count()}
    if mode in ("no-full", "full-on"):
        # No automatic full collection meanwhile (younger ones go on): what a later `garbage` finds is what only a
        # full collection would have freed.
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 10**9 if mode == "no-full" else _THRESHOLD2)
        return {"threshold": gc.get_threshold()}
    if mode in ("garbage", "frozen-garbage"):  # frozen-garbage: the permanent generation's cycles too (GC_FREEZE)
        if mode == "frozen-garbage":
            gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            found = gc.collect()
            kinds = census(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        gc.collect()
        return {"collected": found, "types": dict(kinds.most_common())}
    gc.collect()
    objects = gc.get_objects()
    result = {"total": len(objects), "types": dict(census(objects).most_common())}
    if mode == "detail":
        result["detail"] = dict(_detail(objects).most_common())
    return result


def _describe(obj: object) -> str:
    """A function, method or class by its qualified name; anything else by its type."""
    try:
        if isinstance(obj, type):
            return f"class {obj.__qualname__}"
        if not isinstance(obj, _NAMED):
            return type_name(obj)
        name = getattr(obj, "__qualname__", None)
        func = getattr(obj, "__func__", None)
        if func is not None:
            name = getattr(func, "__qualname__", name)
    except Exception:  # noqa: BLE001 - a proxy or a half-built object: its type is name enough
        return type_name(obj)
    return f"{type_name(obj)} {name}" if isinstance(name, str) else type_name(obj)


_NAMED = (types.FunctionType, types.MethodType, types.BuiltinFunctionType)


def _detail(objects: list[Any]) -> collections.Counter[str]:
    """Every tracked object as `<what it is> <- <what holds it>` (the first holder found that is itself tracked:
    an instance's __dict__ is named by its instance), to tell apart whose dicts, lists and cells they are."""
    owner: dict[int, str] = {}
    ids = {id(o) for o in objects}
    dict_of: dict[int, str] = {}
    for o in objects:
        try:
            d = getattr(o, "__dict__", None) if not isinstance(o, type) else None
        except Exception:  # noqa: BLE001 - as in _describe
            d = None
        if isinstance(d, dict):
            dict_of[id(d)] = _describe(o)
    for o in objects:
        holder = dict_of.get(id(o)) or _describe(o)
        for r in gc.get_referents(o):
            if id(r) in ids and id(r) not in owner:
                owner[id(r)] = holder
    return collections.Counter(f"{dict_of.get(id(o)) and 'dict of ' + dict_of[id(o)] or _describe(o)} <- "
                               f"{owner.get(id(o), '?')}" for o in objects)


def _serve_requests(prefix: str) -> None:
    """Polls `<prefix>.request` (a line `<label> <mode>`); answers with `<prefix>.<pid>.<label>.json`."""
    request, seen = Path(f"{prefix}.request"), ""
    while True:
        time.sleep(0.2)
        try:
            text = request.read_text().strip()
        except OSError:
            continue
        if not text or text == seen:
            continue
        seen = text
        label, _, mode = text.partition(" ")
        try:
            found = _snapshot(mode or "tracked")
        except Exception as exc:  # noqa: BLE001 - said in the answer, and the probe keeps answering
            found = {"error": repr(exc)}
        result = found | {"label": label, "pid": os.getpid(), "t": time.time(), "stats": gc.get_stats()}
        target = Path(f"{prefix}.{os.getpid()}.{label}.json")
        target.with_suffix(".tmp").write_text(json.dumps(result))
        target.with_suffix(".tmp").replace(target)


if _COUNTS and _IN_GUNICORN:
    def _start_server(prefix: str = _COUNTS) -> None:
        threading.Thread(target=_serve_requests, args=(prefix,), name="gc-probe", daemon=True).start()

    _start_server()
    os.register_at_fork(after_in_child=_start_server)  # the gunicorn worker is forked: threads do not follow
