"""Reads and validates every environment variable in one place, so a bad value stops start-up with one clear line.

Kept free of Flask imports: start.sh and gunicorn.conf.py load it before the app exists.
Run `python -m config` to check the environment without starting anything.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.dev_secrets import DevSecretsError, load_or_create
from utils.redis_urls import PLAIN_SCHEMES, default_min_replicas, is_sentinel_url, parse_sentinel_url

ROOT = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A variable has a value the server cannot run with; the message names the variable."""


def _integer(low: int, high: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise ConfigError(f"{name} must be {bounds}, got {value}")
        return value

    return parse


def _optional_integer(low: int, high: int) -> Callable[[str, str], int | None]:
    def parse(name: str, raw: str) -> int | None:
        return _integer(low, high)(name, raw) if raw.strip() else None

    return parse


def _boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true/false), got {raw!r}")


def _optional_boolean(name: str, raw: str) -> bool | None:
    return _boolean(name, raw) if raw.strip() else None


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip()
        folded = {a.lower(): a for a in allowed}
        if value.lower() not in folded:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
        return folded[value.lower()]

    return parse


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _word_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = _word_list(name, raw)
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(f"{name} entries must be '*' or start with http:// or https://, got {origin!r}")
    return origins


def _networks(name: str, raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in _word_list(name, raw):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(f"{name} entries must be IP addresses or CIDR networks, got {entry!r}") from None
    return tuple(networks)


def _host_names(name: str, raw: str) -> tuple[str, ...]:
    hosts = _word_list(name, raw)
    for host in hosts:
        if not re.fullmatch(r"\.?[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\]", host):
            raise ConfigError(f"{name} entries must be host names (a leading dot allows subdomains), without scheme "
                              f"or port, got {host!r}")
    return tuple(host.lower() for host in hosts)


def _redis_url(name: str, raw: str) -> str:
    value = raw.strip()
    if value and is_sentinel_url(value):
        try:
            parse_sentinel_url(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc} (redis+sentinel://host1:port1,host2:port2/<db>/<service>)") from None
    elif value and not value.startswith(PLAIN_SCHEMES):
        raise ConfigError(f"{name} must start with redis://, rediss://, unix:// or redis+sentinel://")
    return value


def _key_prefix(name: str, raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,64}", value):
        raise ConfigError(f"{name} must be 1 to 64 letters, digits or _ . : -, got {raw!r}")
    return value


def _http_url(name: str, raw: str) -> str:
    value = raw.strip()
    if value and (not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value) or "@" in value.split("/")[2]):
        raise ConfigError(f"{name} must be an http:// or https:// URL without credentials, got {value!r}")
    return value


def _http_urls(name: str, raw: str) -> tuple[str, ...]:
    urls = tuple(_http_url(name, url) for url in _word_list(name, raw))
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{name} lists the same URL twice")
    return urls


def _event_types(name: str, raw: str) -> tuple[str, ...]:
    from hub.events import EVENT_TYPES  # here, not at the top: start.sh runs this module before the app's imports

    chosen = _word_list(name, raw)
    unknown = [t for t in chosen if t not in EVENT_TYPES]
    if unknown:
        raise ConfigError(f"{name} has unknown event types {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}")
    return chosen or EVENT_TYPES


def _instance_id(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    return _key_prefix(name, value)

MAX_GUNICORN_THREADS = 20000  # GUNICORN_THREADS' upper bound (hub/redis_client.py sizes its pools from it)


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default (as the environment would spell it), parser and meaning."""

    name: str
    default: str
    parse: Callable[[str, str], Any]
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("SIGNALBOARD_ENV", "production", _choice("production", "development"),
            "`production` requires SECRET_KEY; `development` (`make run`) generates SECRET_KEY, an API key and a "
            "dashboard password when unset, keeps them in DEV_SECRETS_FILE and prints a start-up block"),
    Setting("DEV_SECRETS_FILE", ".signalboard-dev.json", _text,
            "development only: where generated secrets are kept across restarts (relative to the repository; "
            "git-ignored; delete it for new ones)"),
    Setting("DEMO", "1", _boolean,
            "development only: a background publisher sends to `demo.ticker` and `demo.jobs`, and the dashboard "
            "opens watching them (0: off)"),
    Setting("HOST", "127.0.0.1", _text, "bind address (`0.0.0.0` in the Docker image)"),
    Setting("PORT", "5000", _integer(1, 65535), "bind port"),
    Setting("SECRET_KEY", "", _text, "signs sessions and tokens; required in production, at least 16 characters"),
    Setting("API_KEYS", "", _word_list,
            "comma-separated keys allowed to publish and mint tokens; in production each at least 16 characters"),
    Setting("DASHBOARD_PASSWORD", "", _text,
            "password for the dashboard at `/` (in production at least 16 characters); empty means any of API_KEYS "
            "logs in (no keys: login disabled)"),
    Setting("AUTH_FAILURES_PER_MINUTE", "5", _integer(0, 1_000_000),
            "wrong API keys and dashboard passwords one client address may send per minute, counted together; past "
            "it every attempt from that address, right or wrong, gets 429 until the minute is over (0: unlimited)"),
    Setting("TRUSTED_PROXIES", "", _networks,
            "comma-separated addresses or CIDRs of proxies whose `X-Forwarded-For` names the client address (for "
            "per-address limits and logs); empty trusts no header, the socket's peer is the client"),
    Setting("ALLOWED_HOSTS", "", _host_names,
            "comma-separated host names this server answers to (`.example.com` allows subdomains); other `Host` "
            "headers get 400; empty accepts any"),
    Setting("SESSION_COOKIE_SECURE", "", _optional_boolean,
            "send the dashboard's session cookie over HTTPS only; empty means on in production, off in development"),
    Setting("PING_INTERVAL", "25", _integer(1, 3600), "seconds between Engine.IO pings"),
    Setting("PING_TIMEOUT", "20", _integer(1, 3600), "seconds to wait for a pong before dropping a client"),
    Setting("CORS_ALLOWED_ORIGINS", "", _origins,
            "comma-separated origins allowed to connect; empty means same origin only"),
    Setting("ALLOW_ANONYMOUS", "0", _boolean, "allow Socket.IO connections without a token (public channels only)"),
    Setting("ANONYMOUS_PRESENCE_SUBS", "0", _boolean,
            "1 shows anonymous connections who is on a public channel (each `sub`); 0 gives them counts only"),
    Setting("HISTORY_MAX_MESSAGES", "1000", _integer(1, 1_000_000), "messages kept per channel for recovery"),
    Setting("HISTORY_MAX_AGE", "300", _integer(1, 604_800), "seconds a message is kept for recovery"),
    Setting("IDEMPOTENCY_WINDOW_SECONDS", "300", _integer(1, 86_400),
            "seconds a publish's `idempotency_key` is remembered per channel: a repeat within it answers the first "
            "message (`\"duplicate\": true`) and delivers nothing"),
    Setting("MAX_PAYLOAD_BYTES", "65536", _integer(1, 10_000_000),
            "largest `data` of one message, as compact UTF-8 JSON (413 / error ack above)"),
    Setting("MAX_SUBSCRIPTIONS", "100", _integer(1, 100_000), "channels one connection may subscribe to"),
    Setting("TOKEN_MAX_TTL", "604800", _integer(1, 31_536_000), "longest token lifetime POST /api/v1/tokens grants"),
    Setting("CLIENT_RATE_LIMIT", "50", _integer(0, 1_000_000),
            "Socket.IO events per second per connection (0: unlimited)"),
    Setting("CLIENT_RATE_BURST", "100", _integer(1, 1_000_000), "events a connection may send at once"),
    Setting("API_RATE_LIMIT", "2000", _integer(0, 1_000_000), "HTTP API requests per second per key (0: unlimited)"),
    Setting("API_RATE_BURST", "4000", _integer(1, 1_000_000), "HTTP API requests a key may send at once"),
    Setting("PUBLISH_WAIT_MS", "1000", _integer(0, 60_000),
            "a publish answers once its message is handed to every subscriber's connection, or after this long "
            "(backpressure: publishers cannot outrun delivery); 0 answers as soon as it is stored"),
    Setting("FANOUT_QUEUE_SIZE", "10000", _integer(1, 10_000_000),
            "messages waiting for fan-out before publishing answers 503"),
    Setting("MAX_HTTP_BUFFER_SIZE", "1000000", _integer(1024, 100_000_000),
            "largest Engine.IO message or polling payload accepted, in bytes"),
    Setting("REDIS_URL", "", _redis_url,
            "optional; unset keeps everything in this process. "
            "`redis+sentinel://host1:port1,host2:port2/<db>/<service>` follows the master Sentinel names through "
            "failovers (docs/scale.md)"),
    Setting("REDIS_MIN_REPLICAS", "", _optional_integer(0, 16),
            "replicas that must confirm a publish (Redis WAIT) before it is acknowledged; empty means 1 with a "
            "`redis+sentinel://` REDIS_URL, 0 otherwise (docs/scale.md: what an acknowledged publish survives)"),
    Setting("REDIS_REPLICA_TIMEOUT_MS", "1000", _integer(1, 10_000),
            "how long a publish waits for those replicas; past it the answer is 503 `unavailable` (retry with the "
            "same `idempotency_key`)"),
    Setting("REDIS_KEY_PREFIX", "signalboard", _key_prefix,
            "prefix of every Redis key and of the Socket.IO queue channel; one per deployment sharing a Redis"),
    Setting("INSTANCE_ID", "", _instance_id,
            "this instance's name in Redis presence; empty means host-pid-random (unique per start)"),
    Setting("PRESENCE_TTL", "15", _integer(2, 3600),
            "seconds after which a silent (crashed) instance's connections leave presence"),
    Setting("WEBHOOK_URLS", "", _http_urls,
            "comma-separated receivers of the lifecycle webhooks (docs/webhooks.md); empty turns webhooks off"),
    Setting("WEBHOOK_SECRET", "", _text,
            "signs webhook and authorization-hook requests (HMAC-SHA256); required with WEBHOOK_URLS or "
            "AUTH_HOOK_URL, at least 16 characters"),
    Setting("WEBHOOK_EVENTS", "", _event_types,
            "comma-separated event types to send (`connection.opened`, `channel.occupied`... see docs/webhooks.md); "
            "empty means all"),
    Setting("WEBHOOK_BATCH_SIZE", "100", _integer(1, 1000), "most events in one webhook POST"),
    Setting("WEBHOOK_BATCH_MS", "1000", _integer(0, 60_000),
            "milliseconds the first event of a batch waits for more before the POST"),
    Setting("WEBHOOK_TIMEOUT_MS", "5000", _integer(50, 120_000),
            "total deadline of one webhook POST (connect, send, answer); past it the attempt failed"),
    Setting("WEBHOOK_MAX_AGE_SECONDS", "3600", _integer(1, 604_800),
            "events not accepted this long after they happened are dropped (counted, logged once a minute)"),
    Setting("WEBHOOK_RETRY_MAX_MS", "60000", _integer(100, 3_600_000),
            "longest pause between retries (exponential backoff from 250 ms, with jitter)"),
    Setting("WEBHOOK_QUEUE_SIZE", "10000", _integer(1, 10_000_000),
            "without REDIS_URL: events held in memory per receiver (overflow counted; lost on restart); with it, "
            "events waiting in memory while Redis cannot take them"),
    Setting("AUTH_HOOK_URL", "", _http_url,
            "optional backend asked, signed like webhooks, who a token-less connection is and whether it may "
            "subscribe to channels its identity does not grant (docs/webhooks.md)"),
    Setting("AUTH_HOOK_TIMEOUT_MS", "2000", _integer(50, 60_000),
            "total deadline of one authorization-hook request; past it the connect or subscribe is refused"),
    Setting("AUTH_HOOK_CACHE_SECONDS", "30", _integer(0, 86_400),
            "seconds a subscribe answer of the hook is reused for the same sub and channel (0: ask every time)"),
    Setting("CONTROL_REPLY_TIMEOUT_MS", "1000", _integer(100, 10_000),
            "how long a user-level action (disconnect, unsubscribe, revoke, list) waits for other instances' answers"),
    Setting("LOG_LEVEL", "INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "level of the app's own logs"),
    Setting("LOG_FORMAT", "text", _choice("text", "json"), "`text` lines or one JSON object per line"),
    Setting("SOCKETIO_LOG_LEVEL", "WARNING", _choice("DEBUG", "INFO", "WARNING", "ERROR"),
            "level of the engineio/socketio library loggers"),
    Setting("ACCESS_LOG", "0", _boolean, "1 logs every HTTP request (gunicorn's access log, secrets redacted)"),
    Setting("METRICS_TOKEN", "", _text,
            "when set (at least 16 characters in production), GET /metrics needs `Authorization: Bearer <token>`"),
    Setting("METRICS_PUBLIC", "0", _boolean,
            "1 serves GET /metrics to anyone without METRICS_TOKEN in production (development always does); 0 answers "
            "403 there until METRICS_TOKEN is set"),
    Setting("DRAIN_BATCH_SIZE", "200", _integer(1, 1_000_000),
            "clients told to reconnect and disconnected at a time during a graceful shutdown"),
    Setting("DRAIN_NOTICE_SECONDS", "2", _integer(0, 3600),
            "seconds a stopping server keeps answering (/readyz 503, new sessions refused) so load balancers notice, "
            "before it refuses new connections; capped to fit GUNICORN_GRACEFUL_TIMEOUT"),
    Setting("GC_FREEZE", "1", _boolean,
            "1: the survivors of each full garbage collection are left out of the next ones (gc.freeze), so a "
            "collection's pause follows what is new, not the sessions held; all are walked once more whenever they "
            "have doubled (utils/gc_policy.py); 0: CPython's own collections"),
    Setting("GUNICORN_THREADS", "1200", _integer(4, MAX_GUNICORN_THREADS),
            "gthread threads: each long-polling client holds one "
            "(each websocket too with WEBSOCKET_TRANSPORT=threaded)"),
    Setting("ADMISSION_RESERVE_THREADS", "", _optional_integer(1, 20000),
            "threads kept free for plain HTTP; empty means max(8, 10% of GUNICORN_THREADS), at most half of them"),
    Setting("LONG_POLL_CAP_SECONDS", "5", _integer(1, 3600),
            "while threads are short, a long-poll older than this is answered early so the client polls again"),
    Setting("WEBSOCKET_TRANSPORT", "shared", _choice("shared", "threaded"),
            "`shared`: one I/O thread serves every websocket, which then holds no gthread thread (transport/); "
            "`threaded`: python-engineio's stock threads, about 4 per websocket (a fallback)"),
    Setting("MAX_WEBSOCKET_CLIENTS", "", _optional_integer(1, 1_000_000),
            "websocket sessions one process takes with the shared transport (503 + Retry-After above); empty means "
            "the descriptor limit (soft raised to hard at start) minus max(64, 10% of it), said at start"),
    Setting("WEBSOCKET_SEND_BUFFER", "1048576", _integer(65536, 1_000_000_000),
            "bytes that may wait to be sent to one client; one that stays over it 5 s, or goes over 4 times it, is "
            "dropped as a slow consumer"),
    Setting("CONNECT_TIMEOUT_SECONDS", "10", _integer(0, 3600),
            "an Engine.IO session that has joined no Socket.IO namespace this long after opening is closed "
            "(reason `connect_timeout`); one whose CONNECT arrived but is not answered yet gets 3 times as long; "
            "0 disables"),
    Setting("MAX_SESSIONS_PER_ADDRESS", "", _optional_integer(1, 1_000_000),
            "open Engine.IO sessions one client address may hold (429 + Retry-After above); empty means half the "
            "session capacity (the smaller of the polling and websocket capacities), at most 500"),
    Setting("CONNECT_RATE_PER_ADDRESS", "20", _integer(0, 1_000_000),
            "new Engine.IO sessions per second one client address may open on average (429 + Retry-After above; 0: "
            "unlimited)"),
    Setting("CONNECT_BURST_PER_ADDRESS", "200", _integer(1, 1_000_000),
            "new Engine.IO sessions one client address may open at once (a reconnect storm behind one NAT)"),
    Setting("MAX_CONNECTIONS_PER_ADDRESS", "", _optional_integer(1, 1_000_000),
            "TCP connections one client address may hold open on the worker (429 at accept above; peers in "
            "TRUSTED_PROXIES are exempt, limit them in the proxy); empty means half of GUNICORN_WORKER_CONNECTIONS"),
    Setting("REQUEST_READ_TIMEOUT", "10", _integer(1, 3600),
            "seconds a client gets to send a request's head and body, read off the thread pool (408 and closed after)"),
    Setting("CLIENT_FLOOD_REFUSALS", "100", _integer(1, 1_000_000),
            "Socket.IO messages one connection may have refused by CLIENT_RATE_LIMIT (not handled, no thread spent) "
            "before it is closed as a flood"),
    Setting("GUNICORN_WORKER_CONNECTIONS", "4096", _integer(8, 100000),
            "open connections the worker accepts (long-poll GET and POST may use two per client)"),
    Setting("GUNICORN_TIMEOUT", "120", _integer(1, 3600),
            "seconds before a silent worker is restarted (generous: thousands of busy threads can delay its heartbeat, "
            "and a restart drops every client)"),
    Setting("GUNICORN_GRACEFUL_TIMEOUT", "20", _integer(1, 3600), "seconds a stopping worker gets to drain"),
    Setting("GUNICORN_KEEPALIVE", "", _optional_integer(0, 3600),
            "seconds an idle HTTP keep-alive connection is held; empty means PING_INTERVAL + PING_TIMEOUT, so a "
            "long-polling client's pong never meets the server closing its idle connection"),
)


def load_config(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parse every setting from the environment; `overrides` (already typed values) win, as tests pass them.

    Raises ConfigError naming the first variable with a bad value.
    """
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    config: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            config[setting.name] = overrides.pop(setting.name)
        else:
            config[setting.name] = setting.parse(setting.name, environ.get(setting.name, setting.default))
    config.update(overrides)  # extra keys (TESTING and the like) pass through untouched
    _fill_development_secrets(config)
    _check_secret_key(config)
    _check_webhook_secret(config)
    _check_secret_lengths(config)
    _check_thread_budget(config)
    _check_keepalive(config)
    if config["REDIS_MIN_REPLICAS"] is None:
        config["REDIS_MIN_REPLICAS"] = default_min_replicas(config["REDIS_URL"])
    _check_address_limits(config)
    return config


def default_sessions_per_address(config: Mapping[str, Any], websocket_cap: int) -> int:
    """MAX_SESSIONS_PER_ADDRESS when empty: one address must never fill the server, so it gets half the session
    capacity (the smaller of the polling one and, with the shared transport, the websocket cap), at most 500. The
    factory calls it once the websocket cap is known (it may be derived from the descriptor limit)."""
    capacity = config["GUNICORN_THREADS"] - config["ADMISSION_RESERVE_THREADS"]
    if config["WEBSOCKET_TRANSPORT"] == "shared":
        capacity = min(capacity, websocket_cap)
    return max(1, min(500, capacity // 2))


def _check_address_limits(config: dict[str, Any]) -> None:
    if config["MAX_CONNECTIONS_PER_ADDRESS"] is None:
        config["MAX_CONNECTIONS_PER_ADDRESS"] = max(1, config["GUNICORN_WORKER_CONNECTIONS"] // 2)


def _check_keepalive(config: dict[str, Any]) -> None:
    """A long-polling client POSTs its pong every PING_INTERVAL on a keep-alive connection that is otherwise idle. If
    the server closes idle connections after about that long, the pong races the close and gets a reset, and the
    client drops: the keep-alive must be well below the interval (always closed first) or above it (never idle)."""
    interval, timeout = config["PING_INTERVAL"], config["PING_TIMEOUT"]
    keepalive = config["GUNICORN_KEEPALIVE"]
    if keepalive is None:
        config["GUNICORN_KEEPALIVE"] = interval + timeout
    elif interval / 2 < keepalive <= interval + timeout:
        raise ConfigError(f"GUNICORN_KEEPALIVE ({keepalive}) is too close to PING_INTERVAL ({interval}): long-polling "
                          f"clients would send their pong as the server closes the idle connection; use at most "
                          f"{interval // 2}, more than {interval + timeout}, or leave it empty")


def _check_thread_budget(config: dict[str, Any]) -> None:
    threads, reserve = config["GUNICORN_THREADS"], config["ADMISSION_RESERVE_THREADS"]
    if reserve is None:
        reserve = min(max(8, threads // 10), threads // 2)
    elif reserve >= threads:
        raise ConfigError(f"ADMISSION_RESERVE_THREADS must be below GUNICORN_THREADS ({threads}), got {reserve}")
    config["ADMISSION_RESERVE_THREADS"] = reserve


def _check_webhook_secret(config: dict[str, Any]) -> None:
    if not (config["WEBHOOK_URLS"] or config["AUTH_HOOK_URL"]):
        return
    if len(config["WEBHOOK_SECRET"]) < 16:
        raise ConfigError("WEBHOOK_SECRET must be set, at least 16 characters, when WEBHOOK_URLS or AUTH_HOOK_URL is")


def _check_secret_key(config: dict[str, Any]) -> None:
    key = config["SECRET_KEY"]
    if key:
        if len(key) < 16 or key in ("changeme", "change-me", "secret", "dev", "development"):
            raise ConfigError("SECRET_KEY is too short or a placeholder: use at least 16 random characters")
        return
    raise ConfigError("SECRET_KEY must be set when SIGNALBOARD_ENV=production (the default)")


def _fill_development_secrets(config: dict[str, Any]) -> None:
    """In development, SECRET_KEY, API_KEYS and DASHBOARD_PASSWORD left unset come from DEV_SECRETS_FILE (written on
    first use), so a first run can be used at once and a restart keeps logins and tokens. `GENERATED_SECRETS` names
    the settings filled this way: only those may ever be shown (a configured secret never is)."""
    config["GENERATED_SECRETS"] = ()
    if config["SIGNALBOARD_ENV"] != "development":
        return
    missing = [name for name in ("SECRET_KEY", "API_KEYS", "DASHBOARD_PASSWORD") if not config[name]]
    if not missing:
        return
    path = ROOT / config["DEV_SECRETS_FILE"]
    try:
        kept = load_or_create(path)
    except DevSecretsError as exc:
        raise ConfigError(f"DEV_SECRETS_FILE: {exc}") from None
    for name in missing:
        config[name] = (kept["API_KEY"],) if name == "API_KEYS" else kept[name]
    config["GENERATED_SECRETS"] = tuple(missing)
    config["DEV_SECRETS_PATH"] = str(path)


# Secrets checked by a guess over HTTP: short ones fall to a patient guesser even through the throttle.
MIN_SECRET_LENGTH = 16


def _check_secret_lengths(config: dict[str, Any]) -> None:
    if config["SIGNALBOARD_ENV"] != "production":
        return
    for name in ("API_KEYS", "DASHBOARD_PASSWORD", "METRICS_TOKEN"):
        values = config[name] if name == "API_KEYS" else (config[name],)
        if any(0 < len(value) < MIN_SECRET_LENGTH for value in values):
            every = " (every key)" if name == "API_KEYS" else ""
            raise ConfigError(f"{name} must be at least {MIN_SECRET_LENGTH} characters in production{every}: use a "
                              f"random string")


def settings_table() -> str:
    """The README's configuration table, generated so the two never disagree (`python -m config --markdown`)."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        default = f"`{setting.default}`" if setting.default else "(empty)"
        rows.append(f"| `{setting.name}` | {default} | {setting.meaning} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    """Validate the environment; print one line naming the bad variable and fail, or stay quiet."""
    if sys.argv[1:] == ["--markdown"]:
        print(settings_table(), end="")
        return 0
    try:
        load_config()
    except ConfigError as exc:
        print(f"signalboard: configuration error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
