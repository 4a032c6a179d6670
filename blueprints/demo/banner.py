"""The block a development start prints once (from the gunicorn master): where to log in, the API key, a curl
publish and a connection token. Only secrets this run generated are shown; a configured one never is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blueprints.demo.snippets import API_KEY_VARIABLE, curl_publish
from hub.tokens import TokenIssuer

HELLO_CHANNEL = "demo.hello"
TOKEN_TTL = 24 * 3600


def server_url(config: Mapping[str, Any]) -> str:
    """How a browser on this machine reaches the server (a wildcard bind address is reached on loopback)."""
    host = config["HOST"]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{config['PORT']}"


def first_run_banner(config: Mapping[str, Any]) -> str | None:
    """The block for a development start; None in production."""
    if config["SIGNALBOARD_ENV"] != "development":
        return None
    generated = config["GENERATED_SECRETS"]
    url = server_url(config)
    password = config["DASHBOARD_PASSWORD"] if "DASHBOARD_PASSWORD" in generated else "(your DASHBOARD_PASSWORD)"
    api_key = config["API_KEYS"][0] if "API_KEYS" in generated else API_KEY_VARIABLE
    ttl = min(TOKEN_TTL, config["TOKEN_MAX_TTL"])
    lifetime = f"{ttl // 3600} h" if ttl >= 3600 else f"{ttl} s"
    token = TokenIssuer(config["SECRET_KEY"], max_ttl=config["TOKEN_MAX_TTL"]).issue("demo", ["demo.*"], ttl)
    demo = "demo.ticker and demo.jobs get a message a second (DEMO=0: off)" if config["DEMO"] else "off (DEMO=0)"
    lines = [
        "",
        "━━ Signalboard is running (development: this block is never printed in production) ━━",
        f"  Dashboard  {url}/   password: {password}",
        f"  API key    {api_key}" if "API_KEYS" in generated else
        f"  API key    one of your API_KEYS (not shown; the command reads {API_KEY_VARIABLE})",
        f"  Publish    {curl_publish(url, api_key, HELLO_CHANNEL, 'hello', {'text': 'hi'})}",
        f"  Token      {token}",
        f"             (sub demo, may subscribe to demo.*, valid {lifetime}; connect with auth {{token}})",
        f"  Demo       {demo}; `make demo` in another terminal prints them",
        f"  API docs   {url}/api/v1/docs",
    ]
    if generated:
        lines.append(f"  Kept in    {config['DEV_SECRETS_PATH']} ({', '.join(generated)}; delete it for new ones)")
    lines.append("")
    return "\n".join(lines)
