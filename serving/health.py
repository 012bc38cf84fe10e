"""Probes and metrics: GET /healthz (the process answers), /readyz (it can score), /metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from serving.exceptions import FeatureStoreRefused, FeatureStoreUnavailable
from serving.features import feature_store
from serving.metrics import exposition
from serving.model import model_holder

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """200 once a model is loaded and its deployment answers a probe request, else 503."""
    model = model_holder().current
    if model is None:
        return _readiness(503, None, "not checked: no model loaded")
    try:
        feature_store().output_names(model.database, model.deployment)
    except (FeatureStoreUnavailable, FeatureStoreRefused) as exc:
        return _readiness(503, model.version, str(exc))
    return _readiness(200, model.version, "ok")


def _readiness(status: int, model_version: str | None, store_state: str) -> Response:
    response = jsonify(ready=status == 200, model_version=model_version,
                       feature_store=store_state)
    response.status_code = status
    return response


@bp.get("/metrics")
def metrics() -> Response:
    body, content_type = exposition()
    return Response(body, content_type=content_type)
