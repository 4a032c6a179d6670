"""Fixtures for hub tests: a recording delivery and a running fan-out worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub.recording_delivery import RecordingDelivery, Worker


@pytest.fixture
def delivery() -> RecordingDelivery:
    return RecordingDelivery()


@pytest.fixture
def worker(delivery) -> Iterator[Worker]:
    running = Worker(delivery, max_pending=100_000)
    yield running
    running.stop()
