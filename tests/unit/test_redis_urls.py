"""REDIS_URL's sentinel form: parsed like python-socketio parses it, refused with a reason when malformed."""

from __future__ import annotations

import pytest
from socketio.redis_manager import parse_redis_sentinel_url

from config import ConfigError, load_config
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
