"""Wrong API keys and dashboard passwords throttled per client address, together, with one log line a minute."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from app import create_app
from tests.conftest import UNIT_CONFIG

KEY = UNIT_CONFIG["API_KEYS"][0]
HTTPS = "https://localhost"


def publish(client, key: str, address: str = "198.51.100.7", **headers):
    return client.post("/api/v1/publish", json={"channel": "a", "event": "e"},
                       headers={"Authorization": f"Bearer {key}", **headers}, environ_base={"REMOTE_ADDR": address})


@pytest.fixture
def app():
    app = create_app(UNIT_CONFIG)
    yield app
    app.extensions["dashboard"]["sampler"].stop()


def test_wrong_api_keys_get_429_and_one_log_line(app, caplog):
    """Before: 1,230 guesses/s from one address, never a 429, one INFO line per guess."""
    client = app.test_client()
    caplog.set_level(logging.INFO)
    statuses = [publish(client, f"guess-{n:04d}-0123456789").status_code for n in range(30)]
    assert statuses == [401] * 5 + [429] * 25
    limited = publish(client, KEY)
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60  # even the right key
    assert limited.json["error"]["code"] == "rate_limited"
    lines = [r.getMessage() for r in caplog.records if "198.51.100.7" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("wrong API key from 198.51.100.7"), lines
    assert publish(client, KEY, address="198.51.100.8").status_code == 200  # other addresses are not affected


def test_missing_keys_are_not_guesses(app):
    client = app.test_client()
    for _ in range(10):
        assert client.post("/api/v1/publish", environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 401
    assert publish(client, KEY).status_code == 200


def test_api_is_no_way_around_the_login_throttle(app):
    """DASHBOARD_PASSWORD empty: the API keys are the dashboard password, so both doors share one count."""
    client = app.test_client()
    for n in range(5):
        assert publish(client, f"guess-{n}-0123456789abcdef").status_code == 401
    page = client.get("/login", base_url=HTTPS, environ_base={"REMOTE_ADDR": "198.51.100.7"}).get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    login = client.post("/login", base_url=HTTPS, data={"csrf_token": csrf, "password": KEY},
                        environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert login.status_code == 429


def test_behind_a_trusted_proxy_each_client_has_its_own_count():
    """Every operator behind nginx shares its address: the count follows X-Forwarded-For from TRUSTED_PROXIES."""
    app = create_app({**UNIT_CONFIG, "TRUSTED_PROXIES": (ipaddress.ip_network("10.0.0.0/8"),)})
    client = app.test_client()
    for n in range(6):
        publish(client, f"guess-{n}-0123456789abcdef", address="10.0.0.2", **{"X-Forwarded-For": "203.0.113.5"})
    assert publish(client, KEY, address="10.0.0.2", **{"X-Forwarded-For": "203.0.113.5"}).status_code == 429
    assert publish(client, KEY, address="10.0.0.2", **{"X-Forwarded-For": "203.0.113.6"}).status_code == 200
    # A forged header from an untrusted peer counts against that peer, not against the address it names.
    for n in range(6):
        publish(client, f"guess-{n}-0123456789abcdef", address="192.0.2.1", **{"X-Forwarded-For": "203.0.113.6"})
    assert publish(client, KEY, address="10.0.0.2", **{"X-Forwarded-For": "203.0.113.6"}).status_code == 200
    assert publish(client, KEY, address="192.0.2.1").status_code == 429


def test_zero_turns_the_throttle_off():
    client = create_app({**UNIT_CONFIG, "AUTH_FAILURES_PER_MINUTE": 0}).test_client()
    for n in range(10):
        assert publish(client, f"guess-{n}-0123456789abcdef").status_code == 401
    assert publish(client, KEY).status_code == 200
