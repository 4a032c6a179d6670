"""The real app plus a route that holds its gthread pool thread for a while, so a test can keep the whole pool busy."""

from __future__ import annotations

import time

from flask import request

from app import create_app as create_real_app


def create_app():
    app = create_real_app()

    @app.get("/test/hold")
    def hold():
        time.sleep(min(float(request.args.get("seconds", "1")), 10.0))
        return {"held": True}

    return app
