"""Fixtures for the scale-out tests: a real redis-server per test module, nginx on demand."""

from __future__ import annotations

import uuid

import pytest

from tests.scale.processes import NginxProcess, RedisProcess


@pytest.fixture(scope="module")
def redis_server():
    server = RedisProcess().start()
    yield server
    server.close()


@pytest.fixture
def key_prefix() -> str:
    """A fresh key prefix per test, so tests sharing one redis-server never see each other's data."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def nginx_factory():
    started: list[NginxProcess] = []

    def start(ports: list[int]) -> NginxProcess:
        proxy = NginxProcess(ports)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.close()
