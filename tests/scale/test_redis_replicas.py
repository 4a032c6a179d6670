"""REDIS_MIN_REPLICAS: an append is acknowledged only once that many replicas confirm it (Redis WAIT)."""

from __future__ import annotations

import time

import pytest

from hub.errors import Unavailable
from hub.external import history_for
from hub.redis_client import connect
from hub.redis_history import Replicas
from tests.hub.realtime_client import Api
from tests.scale.processes import RedisProcess, wait_replicas
from tests.server import ServerProcess

pytestmark = [pytest.mark.scale, pytest.mark.integration]


@pytest.fixture
def master_and_replica():
    master = RedisProcess(durable=False).start()
    replica = RedisProcess(durable=False, extra=("--replicaof", "127.0.0.1", str(master.port)))
    try:
        yield master, replica
    finally:
        replica.close()
        master.close()


def test_unconfirmed_append_is_refused_and_its_retry_acknowledged_once_confirmed(master_and_replica, key_prefix):
    master, replica = master_and_replica
    store = history_for(master.url, key_prefix, 100, 60, replicas=Replicas(1, 500))
    started = time.monotonic()
    with pytest.raises(Unavailable, match="not confirmed by 1 Redis replica"):
        store.append_all(["orders"], "created", {"n": 1}, idempotency_key="k1")
    waited = time.monotonic() - started
    assert 0.5 <= waited < 2.0  # the replica wait, not the socket timeout
    replica.start()
    wait_replicas(master.port, 1)  # the replica has copied everything so far
    store = history_for(master.url, key_prefix, 100, 60, replicas=Replicas(1, 5000))  # generous on a busy machine
    [retried] = store.append_all(["orders"], "created", {"n": 1}, idempotency_key="k1")
    assert retried.duplicate and retried.offset == 1  # stored once; the retry answers the first
    [fresh] = store.append_all(["orders"], "created", {"n": 2}, idempotency_key="k2")
    assert not fresh.duplicate and fresh.offset == 2
    copied = connect(replica.url).xrange(f"{key_prefix}:stream:orders")
    assert [entry_id for entry_id, _ in copied] == ["1-0", "2-0"]  # acknowledged means on the replica


def test_without_replicas_wanted_nothing_waits(master_and_replica, key_prefix):
    master, _ = master_and_replica
    store = history_for(master.url, key_prefix, 100, 60, replicas=Replicas(0, 300))
    started = time.monotonic()
    [message] = store.append_all(["orders"], "created", None)
    assert message.offset == 1 and time.monotonic() - started < 0.3


def test_http_publish_answers_503_when_no_replica_confirms(master_and_replica, key_prefix):
    master, replica = master_and_replica
    env = {"REDIS_URL": master.url, "REDIS_KEY_PREFIX": key_prefix, "REDIS_MIN_REPLICAS": 1,
           "REDIS_REPLICA_TIMEOUT_MS": 200}
    with ServerProcess(**env) as server:
        api = Api(server)
        body = {"channel": "orders", "event": "created", "data": 1, "idempotency_key": "order-1"}
        started = time.monotonic()
        refused = api.post("/publish", body)
        assert time.monotonic() - started < 2.0
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable", refused.text
        assert "idempotency_key" in refused.json()["error"]["message"]
        replica.start()
        wait_replicas(master.port, 1)
        retried = api.post("/publish", body)
        assert retried.status_code == 200, retried.text
        assert retried.json()["duplicate"] is True and retried.json()["offset"] == 1
        assert server.bad_log_lines() == [], server.log()[-2000:]
