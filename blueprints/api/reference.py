"""The API's contract: its OpenAPI document at /api/v1/openapi.json and a readable page at /api/v1/docs, no key."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response, current_app, render_template

bp = Blueprint("reference", __name__, url_prefix="/api/v1")

DOCUMENT_PATH = Path(__file__).with_name("openapi.yaml")


@functools.cache
def _kept_document() -> dict[str, Any]:
    with DOCUMENT_PATH.open(encoding="utf-8") as source:
        return yaml.safe_load(source)


def openapi_document(config: Any) -> dict[str, Any]:
    """The document kept in openapi.yaml, with the limits this server was configured with filled in."""
    document = copy.deepcopy(_kept_document())
    schemas = document["components"]["schemas"]
    schemas["TokenRequest"]["properties"]["ttl"]["maximum"] = config["TOKEN_MAX_TTL"]
    schemas["TokenRequest"]["properties"]["ttl"]["default"] = min(3600, config["TOKEN_MAX_TTL"])
    return document


@bp.get("/openapi.json")
def document() -> Response:
    # json.dumps, not jsonify: jsonify sorts keys, and the document reads best in the order it was written.
    body = json.dumps(openapi_document(current_app.config), ensure_ascii=False)
    return current_app.response_class(body, mimetype="application/json")


@bp.get("/docs")
def page() -> str:
    return render_template("api_reference.html")
