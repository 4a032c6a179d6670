"""Scale-out: with REDIS_URL, the hub's history, presence and delivery go through Redis, shared by every instance.

Also the `flask --app app publish CHANNEL EVENT JSON` command for publishers outside the web instances.
"""

from __future__ import annotations

import json
import logging
import sys

import click
from flask import Flask, current_app

from blueprints.realtime import hub_services
from blueprints.realtime.transport import SocketIOTransport
from config import ConfigError
from extensions import socketio
from hub.errors import HubError
from hub.external import ExternalPublisher
from hub.redis_client import connect
from hub.redis_fanout import RedisFanout
from hub.redis_presence import RedisPresenceRegistry
from integration.redis_manager import ClusterQueueManager
from utils.redis_health import RedisHealth

log = logging.getLogger(__name__)

EXTENSION_KEY = "cluster"


def init_cluster(app: Flask) -> None:
    """Register the publish command; with REDIS_URL, move the hub onto Redis and add the `redis` readiness check."""
    app.cli.add_command(publish_command)
    url = app.config["REDIS_URL"]
    if not url:
        return
    config = app.config
    server = socketio.server
    manager = server.manager  # built with REDIS_URL before the server (integration/manager.py)
    if not isinstance(manager, ClusterQueueManager):
        raise RuntimeError("REDIS_URL is set but the Socket.IO server was built without the cluster manager")
    history = manager.history
    keys = history.keys
    presence = RedisPresenceRegistry(connect(url), keys, config["INSTANCE_ID"], config["PRESENCE_TTL"])
    fanout = RedisFanout(history, manager)
    hub = hub_services(app).hub
    health = RedisHealth(history.client, manager, presence, socketio.start_background_task,
                         announce=lambda change: hub.reaped([change]), presence_interval=config["PRESENCE_TTL"] / 3)
    fanout.on_use = health.ensure_started
    fanout.bind(SocketIOTransport(server), socketio.start_background_task)
    hub.history, hub.presence, hub.fanout = history, presence, fanout
    app.extensions["readiness"].add_check("redis", health.check)
    app.before_request(health.ensure_started)
    app.extensions[EXTENSION_KEY] = health
    log.info("scale-out: Redis at key prefix %r, instance %s", keys.prefix, config["INSTANCE_ID"])


def _fail(code: str, message: str) -> None:
    click.echo(json.dumps({"error": {"code": code, "message": message}}), err=True)
    sys.exit(1)


@click.command("publish")
@click.argument("channel")
@click.argument("event")
@click.argument("data", default="null")
@click.option("--idempotency-key", default=None,
              help="Publish at most once per channel within IDEMPOTENCY_WINDOW_SECONDS; a repeat answers the first.")
def publish_command(channel: str, event: str, data: str, idempotency_key: str | None) -> None:
    """Publish DATA (JSON, default null) as EVENT on CHANNEL to every instance, through Redis.

    Prints {"channel", "offset", "id", "ts"} on success (plus "duplicate": true for a repeated idempotency key);
    on failure a JSON error on stderr and exit status 1.
    """
    try:
        payload = json.loads(data)
    except ValueError:
        _fail("invalid_payload", "DATA must be JSON, e.g. '{\"price\": 10}' or '\"text\"'")
    config = current_app.config
    if not config["REDIS_URL"]:
        _fail("unavailable", "REDIS_URL is not set: without Redis, publish over HTTP (POST /api/v1/publish)")
    try:
        publisher = ExternalPublisher(
            config["REDIS_URL"],
            key_prefix=config["REDIS_KEY_PREFIX"],
            max_messages=config["HISTORY_MAX_MESSAGES"],
            max_age_seconds=config["HISTORY_MAX_AGE"],
            max_payload_bytes=config["MAX_PAYLOAD_BYTES"],
            idempotency_window=config["IDEMPOTENCY_WINDOW_SECONDS"],
        )
        with publisher:
            message = publisher.publish(channel, event, payload, idempotency_key=idempotency_key)
    except (HubError, ConfigError) as exc:
        code = exc.code if isinstance(exc, HubError) else "invalid_config"
        _fail(code, str(exc))
    click.echo(json.dumps(message.answer()))

