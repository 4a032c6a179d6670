"""The development first run: demo feeds on `demo.*` so the dashboard shows traffic at once, the start-up block
(banner.py, printed by gunicorn.conf.py), and `flask demo`, a terminal subscriber."""

from __future__ import annotations

from flask import Flask

from blueprints.demo.banner import HELLO_CHANNEL
from blueprints.demo.cli import demo_command
from blueprints.demo.publisher import JOBS_CHANNEL, TICKER_CHANNEL, DemoPublisher
from blueprints.realtime.services import hub_services

EXTENSION_KEY = "demo"
DEMO_CHANNELS = (TICKER_CHANNEL, JOBS_CHANNEL, HELLO_CHANNEL)


def init_demo(app: Flask) -> DemoPublisher | None:
    """`flask demo` always; in development the dashboard's first watch, and unless DEMO=0 the demo publisher."""
    app.cli.add_command(demo_command)
    if app.config["SIGNALBOARD_ENV"] != "development":
        return None
    app.extensions["dashboard"]["initial_watch"] = list(DEMO_CHANNELS if app.config["DEMO"] else (HELLO_CHANNEL,))
    if not app.config["DEMO"]:
        return None
    publisher = DemoPublisher(hub_services(app).hub, app.extensions["background_tasks"].start)
    app.extensions[EXTENSION_KEY] = publisher
    app.before_request(publisher.ensure_started)  # the server's first request; a CLI command's app never starts it
    return publisher
