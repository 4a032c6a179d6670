"""Fixtures for hub tests: a recording transport and a running fan-out worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub.recording_transport import RecordingTransport, Worker


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def worker(transport) -> Iterator[Worker]:
    running = Worker(transport, max_pending=100_000)
    yield running
    running.stop()
