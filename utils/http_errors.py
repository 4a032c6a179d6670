"""One JSON error shape for every HTTP failure: `{"error": {"code", "message"}}`, never an HTML page or a trace."""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def error_code(reason: str) -> str:
    """The machine-readable code of an HTTP reason phrase, for Flask's errors and gunicorn's own alike:
    `Request Header Fields Too Large` -> `request_header_fields_too_large`, `I'm a teapot` -> `im_a_teapot`."""
    return re.sub(r"[^a-z0-9]+", "_", reason.lower().replace("'", "")).strip("_") or "error"


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _http_exception(exc: HTTPException) -> Response:
    response = json_error(exc.code or 500, error_code(exc.name or ""), exc.description or exc.name)
    for name, value in exc.get_headers():  # keeps Allow on 405, Retry-After and the like
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected(exc: Exception) -> Response:
    log.error("unhandled error in HTTP request", exc_info=exc)
    return json_error(500, "internal_error", "The server could not handle this request.")


def register_http_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(Exception, _unexpected)
