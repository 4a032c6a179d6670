"""What a held shared-loop websocket costs the garbage collector, counted inside the real server (start.sh, gunicorn):
every GC-tracked object is traversed by each full collection, whose pause stops the worker (docs/perf.md, issue 20).

The counts come from bench/gc_probe/sitecustomize.py in the gunicorn worker (a snapshot of `gc.get_objects()` by
type after a full collection, on request); they are counts, not timings, so the bounds hold on a loaded machine.
The counting tests run with GC_FREEZE=0 (a census sees the three generations, not the permanent one); the last
test is the GC_FREEZE policy itself (utils/gc_policy.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.eio import RawWebSocket
from tests.transport.test_shared_server import next_event, publish, subscribed_websocket

pytestmark = pytest.mark.integration

PROBE = Path(__file__).resolve().parents[2] / "bench" / "gc_probe"
WARM, HELD = 10, 100
# Measured at 84 per session before issue 20's GC work (the handshake's gunicorn objects kept in the environ,
# python-engineio's per-request Input class, a closure per queue, three Conditions per queue), 47 after.
MAX_TRACKED_PER_SESSION = 52


def snapshot(prefix: str, master: int, label: str, mode: str = "tracked") -> dict:
    Path(f"{prefix}.request").write_text(f"{label} {mode}\n")
    deadline = time.time() + 60
    while time.time() < deadline:
        answers = [p for p in Path(prefix).parent.glob(f"probe.*.{label}.json") if p.name != f"probe.{master}."
                   f"{label}.json"]
        if answers:
            time.sleep(0.2)  # written with a rename: a file that is there is whole
            return json.loads(answers[0].read_text())
        time.sleep(0.1)
    raise AssertionError(f"the worker's probe did not answer {label}")


def grown(before: dict, after: dict, kind: str) -> int:
    return after["types"].get(kind, 0) - before["types"].get(kind, 0)


def test_a_held_websocket_session_costs_a_bounded_number_of_tracked_objects(server_factory, tmp_path):
    prefix = str(tmp_path / "probe")
    server = server_factory(ALLOW_ANONYMOUS="1", WEBSOCKET_TRANSPORT="shared", PING_INTERVAL="25", PING_TIMEOUT="20",
                            MAX_WEBSOCKET_CLIENTS="500", PYTHONPATH=str(PROBE), BENCH_GC_COUNTS=prefix, GC_FREEZE="0")
    opened: list[RawWebSocket] = []
    try:
        for _ in range(WARM):  # every lazily imported module and first-use cache is in the baseline
            subscribed_websocket(server.port, opened)
        publish(server, 0)
        for ws in opened:
            assert next_event(ws)[1]["n"] == 0
        base = snapshot(prefix, server.process.pid, "base")
        for _ in range(HELD):
            subscribed_websocket(server.port, opened)
        held = snapshot(prefix, server.process.pid, "held")
        per_session = (held["total"] - base["total"]) / HELD
        assert per_session <= MAX_TRACKED_PER_SESSION, (per_session, sorted(
            ((grown(base, held, k) / HELD, k) for k in held["types"]), reverse=True)[:20])
        # What the handshake request left in the session's environ is gone (integration/session_environ.py) ...
        for kind in ("gunicorn.http.message.Request", "gunicorn.http.wsgi.Response", "gunicorn.http.body.Body",
                     "gunicorn.http.wsgi.WSGIErrorsWrapper", "engineio.middleware.WSGIApp.__call__.<locals>.Input"):
            assert grown(base, held, kind) < HELD / 10, kind
        # ... and each queue has two Conditions (not_full is not_empty), and no closure for its slow-consumer call.
        assert grown(base, held, "threading.Condition") <= 2 * HELD + 5
        assert grown(base, held, "builtins.cell") < HELD / 2
        # The sessions still work: every one gets a broadcast.
        publish(server, 1)
        for ws in opened:
            assert next_event(ws)[1]["n"] == 1
    finally:
        for ws in opened:
            ws.close()


def test_closed_websocket_sessions_are_freed_by_refcounting_not_left_as_cycles(server_factory, tmp_path):
    """A session's socket, queue, Engine.IO session and connection refer to each other while it lives; at its end
    the references are dropped, so what a full collection would find after the closes is not the sessions."""
    prefix = str(tmp_path / "probe")
    # Pings every 2 s: a closed session's ping timer (which holds its socket) fires soon after the close.
    server = server_factory(ALLOW_ANONYMOUS="1", WEBSOCKET_TRANSPORT="shared", PING_INTERVAL="2", PING_TIMEOUT="20",
                            MAX_WEBSOCKET_CLIENTS="500", PYTHONPATH=str(PROBE), BENCH_GC_COUNTS=prefix, GC_FREEZE="0")
    master = server.process.pid
    opened: list[RawWebSocket] = []
    for _ in range(HELD // 2):
        subscribed_websocket(server.port, opened)
    snapshot(prefix, master, "cleared", "garbage")  # every session is old (generation 2) from here on
    snapshot(prefix, master, "no-full", "no-full")  # younger collections go on; only a full one would free cycles
    for ws in opened:
        ws.close()
    time.sleep(2 + 2 + 3)  # the sockets' linger, one ping interval, a margin
    found = snapshot(prefix, master, "after-close", "garbage")
    snapshot(prefix, master, "full-on", "full-on")
    for kind in ("integration.shared_sockets.SharedSocket", "integration.shared_sockets.EngineIOWebSocket",
                 "transport.websocket.WebSocketConnection", "integration.shared_sockets.SinkQueue"):
        assert found["types"].get(kind, 0) < HELD // 20, (kind, found["collected"], list(found["types"].items())[:15])


def test_full_collections_leave_held_sessions_out_once_they_survived_one(server_factory, tmp_path):
    """GC_FREEZE (the default): a full collection's survivors, the held sessions with them, are frozen, so the next
    full collection walks only what came since (the pause no longer grows with the sessions held); GC_FREEZE=0
    keeps CPython's own collections, which walk every session each time."""
    walked = {}
    for freeze in ("1", "0"):
        (tmp_path / freeze).mkdir()
        prefix = str(tmp_path / freeze / "probe")
        server = server_factory(ALLOW_ANONYMOUS="1", WEBSOCKET_TRANSPORT="shared", PING_INTERVAL="25",
                                PING_TIMEOUT="20", MAX_WEBSOCKET_CLIENTS="500", PYTHONPATH=str(PROBE),
                                BENCH_GC_COUNTS=prefix, GC_FREEZE=freeze)
        opened: list[RawWebSocket] = []
        try:
            for _ in range(WARM):
                subscribed_websocket(server.port, opened)
            base = snapshot(prefix, server.process.pid, "base", "generations")
            for _ in range(HELD):
                subscribed_websocket(server.port, opened)
            held = snapshot(prefix, server.process.pid, "held", "generations")
            walked[freeze] = (base, held)
            publish(server, 0)  # the frozen sessions still get their broadcasts
            for ws in opened:
                assert next_event(ws)[1]["n"] == 0
        finally:
            for ws in opened:
                ws.close()
            server.stop()
    (base, held), (plain_base, plain_held) = walked["1"], walked["0"]
    # Frozen: the start-up objects, then the held sessions' (about 46 each); what a full collection walks is small.
    assert base["frozen"] > 20_000, base
    assert held["frozen"] - base["frozen"] >= 30 * HELD, (base, held)
    assert held["generations"][2] < 10 * HELD, held
    # CPython's own: nothing frozen, every session in the oldest generation, walked by every full collection.
    assert plain_held["frozen"] == 0, plain_held
    assert plain_held["generations"][2] - plain_base["generations"][2] >= 30 * HELD, (plain_base, plain_held)
