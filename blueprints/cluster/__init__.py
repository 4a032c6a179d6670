"""Scale-out: the commands for backends outside the web instances, all through Redis: `flask --app app publish
CHANNEL EVENT JSON`, `flask --app app users show|disconnect|unsubscribe SUB ...` and `flask --app app tokens revoke
--sub|--jti`.

The Redis backends themselves (history, presence, delivery through python-socketio's Redis channel) are built in
blueprints/realtime/redis_backends.py, chosen with the others by blueprints/realtime/services.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from flask import Flask, current_app

from blueprints.api.cli import tokens
from config import ConfigError
from hub.errors import HubError
from hub.external import ExternalPublisher


def init_cluster(app: Flask) -> None:
    """Register the commands."""
    app.cli.add_command(publish_command)
    app.cli.add_command(users_command)


def _fail(code: str, message: str) -> NoReturn:
    click.echo(json.dumps({"error": {"code": code, "message": message}}), err=True)
    sys.exit(1)


def _external_publisher() -> ExternalPublisher:
    config = current_app.config
    if not config["REDIS_URL"]:
        _fail("unavailable", "REDIS_URL is not set: without Redis, use the HTTP API (/api/v1/...) of the instance")
    return ExternalPublisher.from_config(config)


def _run_remote(call: Callable[[ExternalPublisher], Any]) -> Any:
    """Run `call` with a publisher; hub and config errors end the command with a JSON error and status 1."""
    try:
        with _external_publisher() as publisher:
            return call(publisher)
    except (HubError, ConfigError) as exc:
        code = exc.code if isinstance(exc, HubError) else "invalid_config"
        _fail(code, str(exc))


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
    message = _run_remote(lambda publisher: publisher.publish(channel, event, payload, idempotency_key=idempotency_key))
    click.echo(json.dumps(message.answer()))


@click.group("users")
def users_command() -> None:
    """Act on a user's connections on every instance, through Redis (like /api/v1/users/<sub>/...).

    Each prints the API's JSON answer; on failure a JSON error on stderr and exit status 1.
    """


@users_command.command("show")
@click.argument("sub")
def show_user(sub: str) -> None:
    """Print SUB's connections on every instance."""
    click.echo(json.dumps(_run_remote(lambda publisher: publisher.user_connections(sub))))


@users_command.command("disconnect")
@click.argument("sub")
@click.option("--reason", default=None, help="Told to each connection in signalboard:disconnect.")
@click.option("--reconnect/--no-reconnect", default=False, show_default=True, help="Whether it may reconnect.")
def disconnect_user(sub: str, reason: str | None, reconnect: bool) -> None:
    """Disconnect every connection of SUB."""
    click.echo(json.dumps(_run_remote(lambda publisher: publisher.disconnect_user(sub, reason, reconnect))))


@users_command.command("unsubscribe")
@click.argument("sub")
@click.argument("channel")
def unsubscribe_user(sub: str, channel: str) -> None:
    """Take CHANNEL from SUB: its connections leave it; tokens issued until now no longer grant it."""
    click.echo(json.dumps(_run_remote(lambda publisher: publisher.unsubscribe_user(sub, channel))))


@tokens.command("revoke")
@click.option("--sub", default=None, help="Revoke every token of this sub issued until now.")
@click.option("--jti", default=None, help="Revoke this one token (its jti claim).")
def revoke_tokens(sub: str | None, jti: str | None) -> None:
    """Revoke tokens on every instance, through Redis: refused at connect and refresh, holders disconnected."""
    click.echo(json.dumps(_run_remote(lambda publisher: publisher.revoke_tokens(sub=sub, jti=jti))))

