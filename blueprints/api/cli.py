"""`flask --app app tokens create ...`: mint a connection token from the command line, like POST /api/v1/tokens."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from blueprints.api import bp
from blueprints.api.routes import DEFAULT_TOKEN_TTL
from blueprints.realtime.services import hub_services
from hub.errors import HubError

tokens = AppGroup("tokens", help="Connection tokens (JWT, HS256, signed with SECRET_KEY).")


@tokens.command("create")
@click.option("--sub", required=True, help="Who the token identifies (shown in presence).")
@click.option("--channel", "channels", multiple=True, help="Channel or pattern it may subscribe to; repeatable.")
@click.option("--publish", multiple=True, help="Channel or pattern it may publish to; repeatable.")
@click.option("--ttl", type=int, default=DEFAULT_TOKEN_TTL, show_default=True, help="Lifetime in seconds.")
def create(sub: str, channels: tuple[str, ...], publish: tuple[str, ...], ttl: int) -> None:
    """Print a token for SUB; example: tokens create --sub alice --channel 'orders.*' --ttl 3600"""
    try:
        token = hub_services().tokens.issue(sub, list(channels), ttl, publish=list(publish) or None)
    except HubError as exc:
        raise click.UsageError(exc.message) from None
    click.echo(token)


bp.cli.add_command(tokens)
