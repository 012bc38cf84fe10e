"""Every error reply is JSON: {"error": "<sentence>", "field": "<offending field>"?}."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from serving.metrics import INTERNAL_ERRORS

log = logging.getLogger(__name__)


class APIError(Exception):
    """A request the server refuses; `field` names the part of the body at fault."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}


def init_app(app: Flask) -> None:
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)


def error_response(status: int, message: str, field: str | None = None) -> Response:
    body = {"error": message} if field is None else {"error": message, "field": field}
    response = jsonify(body)
    response.status_code = status
    return response


def _api_error(error: APIError) -> Response:
    response = error_response(error.status, error.message, error.field)
    response.headers.update(error.headers)
    return response


def _http_error(error: HTTPException) -> Response:
    """Werkzeug's own refusals (404, 405, 413, 415, malformed JSON) in the same JSON shape."""
    response = error_response(error.code or 500, error.description or error.name)
    for name, value in error.get_headers():  # e.g. Allow on a 405
        if name != "Content-Type":
            response.headers[name] = value
    return response


def _internal_error(error: Exception) -> Response:
    """A bug: log the traceback, count it, and still answer in JSON."""
    log.exception("unhandled error")
    INTERNAL_ERRORS.inc()
    return error_response(500, "internal server error")
