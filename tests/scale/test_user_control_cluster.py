"""User-level control across two instances sharing a real redis-server: the API call goes to one instance, the
clients sit on the other, and every action takes effect there within 1 s (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import redis
import requests

from hub.external import ExternalPublisher
from tests.hub.realtime_client import Api, unique
from tests.integration import user_control as scenario
from tests.scale.processes import ROOT, running_instances
from tests.server import TEST_ENV, ServerProcess

pytestmark = [pytest.mark.scale, pytest.mark.integration]


@pytest.fixture(scope="module")
def cluster_env(redis_server):
    return {"REDIS_URL": redis_server.url, "REDIS_KEY_PREFIX": f"uc{os.getpid()}", "PRESENCE_TTL": 3,
            "API_RATE_LIMIT": 0, "CLIENT_RATE_LIMIT": 0, "GUNICORN_TIMEOUT": 120}


@pytest.fixture(scope="module")
def pair(cluster_env):
    with running_instances([ServerProcess(INSTANCE_ID=f"uc-{name}", **cluster_env) for name in ("a", "b")]) as servers:
        yield servers


def test_disconnect_user_on_the_other_instance(pair):
    a, b = pair
    assert scenario.disconnect_user(a, b, instances=2) < scenario.WITHIN


@pytest.mark.parametrize("run", [scenario.unsubscribe_user, scenario.revoke_sub, scenario.revoke_jti,
                                 scenario.revoke_racing_connects, scenario.unsubscribe_racing_subscribes],
                         ids=lambda run: run.__name__)
def test_action_on_the_other_instance(pair, run):
    """unsubscribe, revoke by sub, revoke by jti, revoke racing connects: API on a, clients on b."""
    a, b = pair
    run(a, b)


def test_bad_input_with_redis(pair):
    scenario.bad_input(pair[0])


def test_python_publisher_and_cli_act_on_every_instance(pair, cluster_env):
    a, b = pair
    api = Api(a)
    sub = unique("user")
    on_a = scenario.connected(a.url, api.token(sub, ["**"]))
    on_b = scenario.connected(b.url, api.token(sub, ["**"]))
    env = {**os.environ, **TEST_ENV, **{k: str(v) for k, v in cluster_env.items()}}
    flask = [str(ROOT / ".venv" / "bin" / "flask"), "--app", "app"]
    shown = subprocess.run([*flask, "users", "show", sub], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    listing = json.loads(shown.stdout.strip().splitlines()[-1])
    assert sorted(row["instance"] for row in listing["connections"]) == ["uc-a", "uc-b"]
    assert listing["complete"] is True and listing["instances"] == 2

    with ExternalPublisher(cluster_env["REDIS_URL"], key_prefix=cluster_env["REDIS_KEY_PREFIX"]) as publisher:
        answer = publisher.disconnect_user(sub, reason="maintenance", reconnect=True)
    assert answer["disconnected"] == 2 and answer["complete"] is True
    for client in (on_a, on_b):
        assert client.disconnected.wait(scenario.WITHIN)
        assert client.events("signalboard:disconnect") == [{"reason": "maintenance", "reconnect": True}]

    token = api.token(sub, ["**"])
    revoked = subprocess.run([*flask, "tokens", "revoke", "--sub", sub], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout.strip().splitlines()[-1])["revoked"] == {"sub": sub}
    assert scenario.WatchedClient(b.url).try_connect({"token": token})["data"]["reason"] == "token_revoked"

    bad = subprocess.run([*flask, "tokens", "revoke"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and json.loads(bad.stderr.strip().splitlines()[-1])["error"]["code"] == "invalid_payload"
    no_redis = subprocess.run([*flask, "users", "disconnect", sub], cwd=ROOT, env={**env, "REDIS_URL": ""},
                              capture_output=True, text=True, timeout=60)
    assert no_redis.returncode == 1
    assert json.loads(no_redis.stderr.strip().splitlines()[-1])["error"]["code"] == "unavailable"
    assert "Traceback" not in bad.stderr + no_redis.stderr



def test_a_revocation_missed_by_a_listener_away_from_redis_is_caught_up(pair, redis_server):
    """Every instance's pub/sub connection is cut (CLIENT KILL) just before a revocation: an instance that was not
    subscribed when it was published re-checks its connections against the store once it is back."""
    a, b = pair
    api = Api(a)
    sub = unique("user")
    holder = scenario.connected(b.url, api.token(sub, ["**"]))
    admin = redis.Redis.from_url(redis_server.url)
    try:
        started = time.monotonic()
        admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        answer = scenario.ok(api.post("/tokens/revoke", {"sub": sub}))
        answered = time.monotonic() - started
        assert holder.disconnected.wait(5), "the holder of a revoked token is still connected"
        print(f"\nrevocation with the listeners cut: disconnected {holder.disconnected_at - started:.2f} s after the "
              f"cut; the API answered after {answered:.2f} s ({answer['instances']} of the instances heard it live, "
              f"complete: {answer['complete']})")
        if answer["instances"] == 0:  # nobody was subscribed: it was the catch-up that found it
            b.wait_until(lambda: "missed during an outage" in b.log(), timeout=5, what="the catch-up on b")
        assert holder.events("signalboard:token_revoked")
    finally:
        admin.close()
    for server in pair:  # both listeners are back
        server.wait_until(lambda s=server: requests.get(s.url + "/readyz", timeout=5).status_code == 200, timeout=20)
