"""config.py: every bad value stops start-up with one line naming its variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from config import ConfigError, load_config
from tests.server import ROOT

GOOD = {"SECRET_KEY": "a-real-secret-of-some-length"}


def test_defaults():
    config = load_config(environ=GOOD)
    assert config["PORT"] == 5000
    assert (config["PING_INTERVAL"], config["PING_TIMEOUT"]) == (25, 20)
    assert config["CORS_ALLOWED_ORIGINS"] == ()
    assert config["ALLOW_ANONYMOUS"] is False
    assert config["ADMISSION_RESERVE_THREADS"] == 120  # 10% of the 1200 default threads


@pytest.mark.parametrize("name, value", [
    ("PORT", "abc"), ("PORT", "70000"), ("PING_TIMEOUT", "-1"), ("PING_INTERVAL", "0"),
    ("LOG_FORMAT", "xml"), ("ALLOW_ANONYMOUS", "maybe"), ("CORS_ALLOWED_ORIGINS", "example.com"),
    ("REDIS_URL", "http://localhost"), ("GUNICORN_THREADS", "2"), ("ADMISSION_RESERVE_THREADS", "1200"),
    ("GUNICORN_KEEPALIVE", "25"), ("GUNICORN_KEEPALIVE", "13"), ("GUNICORN_KEEPALIVE", "45"),
])
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_config(environ={**GOOD, name: value})


def test_production_requires_a_real_secret():
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_config(environ={})
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_config(environ={"SECRET_KEY": "changeme"})


def test_development_generates_secrets_once_and_keeps_them(tmp_path):
    environ = {"SIGNALBOARD_ENV": "development", "DEV_SECRETS_FILE": str(tmp_path / "dev.json")}
    config = load_config(environ=environ)
    assert config["GENERATED_SECRETS"] == ("SECRET_KEY", "API_KEYS", "DASHBOARD_PASSWORD")
    assert len(config["SECRET_KEY"]) >= 32 and len(config["API_KEYS"]) == 1 and config["DASHBOARD_PASSWORD"]
    assert (tmp_path / "dev.json").stat().st_mode & 0o077 == 0  # only the owner may read it
    again = load_config(environ=environ)  # a restart, or the gunicorn worker after its master
    assert [again[k] for k in again["GENERATED_SECRETS"]] == [config[k] for k in config["GENERATED_SECRETS"]]


def test_development_never_replaces_a_configured_secret(tmp_path):
    environ = {"SIGNALBOARD_ENV": "development", "DEV_SECRETS_FILE": str(tmp_path / "dev.json"),
               "API_KEYS": "mine-1,mine-2", "SECRET_KEY": GOOD["SECRET_KEY"]}
    config = load_config(environ=environ)
    assert config["GENERATED_SECRETS"] == ("DASHBOARD_PASSWORD",)
    assert config["API_KEYS"] == ("mine-1", "mine-2") and config["SECRET_KEY"] == GOOD["SECRET_KEY"]
    everything = {**environ, "DASHBOARD_PASSWORD": "pw"}
    (tmp_path / "dev.json").unlink()
    assert load_config(environ=everything)["GENERATED_SECRETS"] == ()
    assert not (tmp_path / "dev.json").exists()  # nothing to generate: no file either


def test_production_generates_nothing(tmp_path):
    config = load_config(environ={**GOOD, "DEV_SECRETS_FILE": str(tmp_path / "dev.json")})
    assert config["GENERATED_SECRETS"] == () and config["API_KEYS"] == () and not config["DASHBOARD_PASSWORD"]
    assert not (tmp_path / "dev.json").exists()


@pytest.mark.parametrize("content", ["{not json", "[]", '{"SECRET_KEY": "x"}'])
def test_unusable_dev_secrets_file_names_the_variable(tmp_path, content):
    (tmp_path / "dev.json").write_text(content)
    with pytest.raises(ConfigError, match="DEV_SECRETS_FILE.*delete it"):
        load_config(environ={"SIGNALBOARD_ENV": "development", "DEV_SECRETS_FILE": str(tmp_path / "dev.json")})


def test_reserve_is_capped_for_small_pools():
    assert load_config(environ={**GOOD, "GUNICORN_THREADS": "4"})["ADMISSION_RESERVE_THREADS"] == 2


def test_keepalive_stays_clear_of_the_ping_interval():
    """Long-polling pongs arrive every PING_INTERVAL: the idle keep-alive must outlast that, or end well before."""
    assert load_config(environ=GOOD)["GUNICORN_KEEPALIVE"] == 45
    assert load_config(environ={**GOOD, "PING_INTERVAL": "5", "PING_TIMEOUT": "10"})["GUNICORN_KEEPALIVE"] == 15
    assert load_config(environ={**GOOD, "GUNICORN_KEEPALIVE": "12"})["GUNICORN_KEEPALIVE"] == 12
    assert load_config(environ={**GOOD, "GUNICORN_KEEPALIVE": "46"})["GUNICORN_KEEPALIVE"] == 46
    assert load_config(environ={**GOOD, "GUNICORN_KEEPALIVE": "0"})["GUNICORN_KEEPALIVE"] == 0


def test_command_line_check_prints_one_line():
    result = subprocess.run([sys.executable, "-m", "config"], cwd=ROOT, capture_output=True, text=True,
                            env={"PORT": "abc", "SECRET_KEY": GOOD["SECRET_KEY"]})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["signalboard: configuration error: PORT must be a whole number, "
                                                  "got 'abc'"]


def test_readme_carries_the_generated_settings_table():
    from config import settings_table

    assert settings_table() in (ROOT / "README.md").read_text(), "run `python -m config --markdown` into README.md"


def test_env_example_lists_every_setting():
    from config import SETTINGS

    text = (ROOT / ".env.example").read_text()
    assert [s.name for s in SETTINGS if f"\n{s.name}=" not in text] == []


@pytest.mark.parametrize("name, value", [
    ("API_KEYS", "a"), ("API_KEYS", "a-long-enough-key-0123,short"), ("DASHBOARD_PASSWORD", "hunter2"),
    ("METRICS_TOKEN", "0123456789abcde"),
])
def test_short_secrets_are_refused_in_production(name, value):
    with pytest.raises(ConfigError, match=f"^{name} must be at least 16 characters"):
        load_config(environ={**GOOD, name: value})
    assert load_config(environ={**GOOD, "SIGNALBOARD_ENV": "development", name: value})  # a first run may use any


@pytest.mark.parametrize("name, value", [("TRUSTED_PROXIES", "10.0.0.0/33"), ("TRUSTED_PROXIES", "nginx"),
                                         ("ALLOWED_HOSTS", "https://example.com"), ("ALLOWED_HOSTS", "a b")])
def test_bad_network_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_config(environ={**GOOD, name: value})


def test_network_settings_are_parsed():
    config = load_config(environ={**GOOD, "TRUSTED_PROXIES": "10.0.0.1, 172.16.0.0/12,::1",
                                  "ALLOWED_HOSTS": "Example.COM,.example.org"})
    assert [str(n) for n in config["TRUSTED_PROXIES"]] == ["10.0.0.1/32", "172.16.0.0/12", "::1/128"]
    assert config["ALLOWED_HOSTS"] == ("example.com", ".example.org")
