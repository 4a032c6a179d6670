"""Fixtures for the scale-out tests: a real redis-server per test module, Sentinel clusters and nginx on demand."""

from __future__ import annotations

import uuid

import pytest

from tests.scale.processes import NginxProcess, RedisProcess, SentinelCluster


@pytest.fixture(scope="module")
def redis_server():
    server = RedisProcess().start()
    yield server
    server.close()


@pytest.fixture
def cluster(request):
    """A master, replicas (1, or the test's indirect parameter) and three Sentinels, all ended by PID."""
    started = SentinelCluster(replicas=getattr(request, "param", 1))
    try:
        yield started.start()
    finally:
        started.close()


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
