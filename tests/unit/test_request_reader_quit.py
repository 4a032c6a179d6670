"""The request reader's quick shutdown must not take, in the signal handler, a lock its own loop may be holding."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from gunicorn.workers.gthread import PollableMethodQueue

from integration.request_reader import RequestReadingWorker


def _worker(interrupted: list[str]) -> RequestReadingWorker:
    # Only what handle_quit and the loop's method queue use; building a whole gunicorn worker needs an arbiter.
    worker = RequestReadingWorker.__new__(RequestReadingWorker)
    worker.alive = True
    worker.tpool = ThreadPoolExecutor(max_workers=1)
    worker.method_queue = PollableMethodQueue()
    worker.method_queue.init()
    worker.cfg = SimpleNamespace(worker_int=lambda w: interrupted.append("worker_int"))  # type: ignore[assignment]
    worker._loop_running = True
    return worker


def test_a_quit_while_the_loop_is_inside_submit_is_run_by_the_loop_afterwards():
    """SIGINT/SIGQUIT landing while the poller thread was in tpool.submit() (which holds the executor's lock while a
    new pool thread starts) ran gunicorn's handle_quit, whose tpool.shutdown() waited for that lock forever."""
    interrupted: list[str] = []
    worker = _worker(interrupted)
    try:
        with worker.tpool._shutdown_lock:  # where submit() is when the signal lands
            quit_returned = threading.Event()
            # In its own thread, so the old behaviour fails this test instead of hanging it.
            handler = threading.Thread(target=lambda: (worker.handle_quit(signal.SIGQUIT, None), quit_returned.set()),
                                       daemon=True)
            handler.start()
            assert quit_returned.wait(2), "handle_quit waited for the executor's lock"
            assert interrupted == [] and worker.alive  # nothing done in the handler but queueing the quit
        with pytest.raises(SystemExit) as exited:
            worker.method_queue.run_callbacks(None)  # the loop's next turn
        assert exited.value.code == 0
        assert interrupted == ["worker_int"] and not worker.alive and worker.tpool._shutdown
    finally:
        worker.tpool.shutdown(wait=True)
        worker.method_queue.close()


def test_a_quit_before_the_loop_runs_is_gunicorns_own_at_once():
    interrupted: list[str] = []
    worker = _worker(interrupted)
    worker._loop_running = False
    try:
        with pytest.raises(SystemExit):
            worker.handle_quit(signal.SIGQUIT, None)
        assert interrupted == ["worker_int"] and worker.tpool._shutdown
    finally:
        worker.method_queue.close()
