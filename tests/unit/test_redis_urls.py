"""REDIS_URL's sentinel form (parsed like python-socketio parses it, refused with a reason when malformed), the
clients it builds, REDIS_MIN_REPLICAS's default, and the high-water marks epochs rely on."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelConnectionPool
from socketio.redis_manager import parse_redis_sentinel_url

from config import ConfigError, load_config
from hub.redis_client import client_for
from hub.redis_history import HighWater
from utils.redis_urls import parse_sentinel_url

TEST_ENV = {"SECRET_KEY": "a-real-secret-of-some-length"}


@pytest.mark.parametrize("url", [
    "redis+sentinel://127.0.0.1:26379/0/mymaster",
    "redis+sentinel://s1:26379,s2:26380,s3:26381/2/signalboard",
    "redis+sentinel://:secret@s1:1,s2:2/0/svc",
    "redis+sentinel://user:p%40ss@s1:1/3/svc",
])
def test_same_reading_as_python_socketio(url):
    ours = parse_sentinel_url(url)
    sentinels, service, kwargs = parse_redis_sentinel_url(url)
    assert list(ours.sentinels) == sentinels
    assert ours.service == service
    assert ours.db == kwargs.get("db", 0)
    assert ours.password == (kwargs["password"].replace("%40", "@") if "password" in kwargs else None)


@pytest.mark.parametrize("url, reason", [
    ("redis+sentinel://s1/0/svc", "host:port"),
    ("redis+sentinel://s1:99999/0/svc", "host:port"),
    ("redis+sentinel://s1:1,/0/svc", "host:port"),
    ("redis+sentinel://s1:1/0", "/<db>/<service>"),
    ("redis+sentinel://s1:1/x/svc", "/<db>/<service>"),
    ("redis+sentinel://s1:1", "/<db>/<service>"),
])
def test_malformed_sentinel_urls_are_refused_at_start(url, reason):
    with pytest.raises(ConfigError) as caught:
        load_config(environ={**TEST_ENV, "REDIS_URL": url})
    assert "REDIS_URL" in str(caught.value) and reason in str(caught.value)


def test_sentinel_url_accepted_and_other_schemes_refused():
    url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/0/signalboard"
    assert load_config(environ={**TEST_ENV, "REDIS_URL": url})["REDIS_URL"] == url
    with pytest.raises(ConfigError, match="redis\\+sentinel://"):
        load_config(environ={**TEST_ENV, "REDIS_URL": "http://127.0.0.1:6379"})


@pytest.mark.parametrize("url, given, expected", [
    ("redis+sentinel://127.0.0.1:26379/0/signalboard", "", 1),
    ("redis://127.0.0.1:6379/0", "", 0),
    ("", "", 0),
    ("redis+sentinel://127.0.0.1:26379/0/signalboard", "0", 0),
    ("redis://127.0.0.1:6379/0", "2", 2),
])
def test_min_replicas_defaults_to_one_behind_sentinel(url, given, expected):
    config = load_config(environ={**TEST_ENV, "REDIS_URL": url, "REDIS_MIN_REPLICAS": given})
    assert config["REDIS_MIN_REPLICAS"] == expected


def test_a_sentinel_url_builds_a_client_that_follows_the_master():
    """No connection is made here: the client asks the Sentinels for the master on its first command."""
    plain = client_for("redis://127.0.0.1:6379/2", socket_timeout=2.0)
    assert not isinstance(plain.connection_pool, SentinelConnectionPool)
    client = client_for("redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/3/signalboard", socket_timeout=2.0,
                        socket_connect_timeout=1.0)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "signalboard"
    assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["password"] == "pw"
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [26379, 26380]
    # The Sentinels get the same short timeouts, never the master's password.
    assert sentinels[0].connection_pool.connection_kwargs["socket_connect_timeout"] == 1.0
    assert sentinels[0].connection_pool.connection_kwargs.get("password") is None


def test_high_water_keeps_the_highest_offset_per_epoch_and_the_most_recent_channels():
    marks = HighWater(limit=2)
    marks.saw("a", "e1", 5)
    marks.saw("a", "e1", 3)  # a lower offset never lowers the mark
    assert marks.mark("a") == ("e1", 5)
    marks.saw("a", "e2", 1)  # a new epoch starts the mark again
    assert marks.mark("a") == ("e2", 1)
    marks.saw("b", "e2", 7)
    marks.saw("a", "e2", 2)
    marks.saw("c", "e2", 9)  # over the limit: the least recently seen channel (b) goes
    assert marks.mark("b") is None and marks.snapshot() == [("a", "e2", 2), ("c", "e2", 9)]
