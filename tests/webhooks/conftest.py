"""Fixtures of the webhook tests: a real receiver process per test."""

from __future__ import annotations

import pytest

from tests.webhooks.support import Receiver


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.close()
