"""Model administration, behind a bearer token (FRAUDFLOW_ADMIN_TOKEN).

- POST /update {"model_path": ..., "database"?: ..., "deployment"?: ...}: the seed's call.
  Checks the model, makes it the registry's production model and serves it; a bad model is
  refused (422) and the current one serves on.
- GET /models: the served model, the previous one, and the registry's versions and history.
- POST /models/reload: serve the registry's production model now (workers also poll it).
- POST /models/rollback: put back the model promoted before the current production one.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from core.exceptions import RegistryError
from serving.errors import APIError, error_response
from serving.exceptions import (
    FeatureStoreRefused,
    FeatureStoreUnavailable,
    ModelRejected,
    NoModelToServe,
)
from serving.model import model_holder

bp = Blueprint("admin", __name__)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_UPDATE_FIELDS = ("model_path", "database", "deployment")


@bp.before_request
def require_admin_token() -> None:
    expected: str | None = current_app.config["ADMIN_TOKEN"]
    if not expected:
        raise APIError(403, "admin endpoints are disabled: no admin token is configured "
                            "(set FRAUDFLOW_ADMIN_TOKEN)")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                             expected.encode()):
        raise APIError(401, "a valid admin token is required: Authorization: Bearer <token>",
                       headers={"WWW-Authenticate": 'Bearer realm="fraudflow admin"'})


@bp.errorhandler(ModelRejected)
def _model_rejected(error: ModelRejected) -> Response:
    return error_response(422, f"model rejected, the current model serves on: {error}")


@bp.errorhandler(NoModelToServe)
def _no_model(error: NoModelToServe) -> Response:
    return error_response(409, str(error))


@bp.errorhandler(FeatureStoreUnavailable)
def _store_unavailable(error: FeatureStoreUnavailable) -> Response:
    return error_response(503, f"cannot check the model against the feature store: {error}")


@bp.errorhandler(FeatureStoreRefused)
def _store_refused(error: FeatureStoreRefused) -> Response:
    return error_response(422, f"model rejected, the current model serves on: the feature "
                               f"store cannot serve its deployment: {error}")


@bp.errorhandler(RegistryError)
def _registry_error(error: RegistryError) -> Response:
    return error_response(503, f"model registry: {error}")


@bp.post("/update")
def update() -> Response:
    body = request.get_json()
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object with model_path")
    for name in body:
        if name not in _UPDATE_FIELDS:
            raise APIError(400, f"unknown field; /update takes {', '.join(_UPDATE_FIELDS)}",
                           name)
    model_path = body.get("model_path")
    if not isinstance(model_path, str) or not model_path:
        raise APIError(400, "a model file path is required", "model_path")
    model_holder().update(Path(model_path), _identifier(body, "database"),
                          _identifier(body, "deployment"))
    return _models_reply()


def _identifier(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not (isinstance(value, str) and _IDENTIFIER.fullmatch(value)):
        raise APIError(400, "must be an OpenMLDB name (letters, digits, _)", name)
    return value


@bp.get("/models")
def models() -> Response:
    return _models_reply()


@bp.post("/models/reload")
def reload() -> Response:
    model_holder().reload()
    return _models_reply()


@bp.post("/models/rollback")
def rollback() -> Response:
    model_holder().rollback()
    return _models_reply()


def _models_reply() -> Response:
    """What this worker serves, and the registry's view (shared by every worker)."""
    holder = model_holder()
    registry = holder.registry
    production = registry.production()
    current, previous = holder.current, holder.previous
    return jsonify(
        current=current.describe() if current is not None else None,
        previous=previous.describe() if previous is not None else None,
        production_version=production.version if production is not None else None,
        history=registry.history(),
        versions=[version.version for version in registry.versions()])
