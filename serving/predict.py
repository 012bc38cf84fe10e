"""POST /predict: score one click event, or a JSON array of them.

Reply for one event:
    {"model_version": "20261128T120000Z-1a2b3c4d", "score": 0.0031, "decision": "fraud",
     "threshold": 0.0042, "threshold_source": "model"}
and for an array, in its order:
    {"model_version": "...", "threshold": ..., "threshold_source": ...,
     "predictions": [{"score": ..., "decision": ...}, ...]}
`score` is the model's probability that the click is attributed (leads to an app download),
as in the seed; `decision` is "fraud" (block the click) when the score is below `threshold`,
else "ok". `threshold_source` says where the threshold came from: "model" (the serving model's
operating point, chosen in training), "override" (FRAUDFLOW_PREDICT_THRESHOLD) or "default"
(a model without an operating point; see serving.model). With `?explain=1` each prediction
also has "features": the model's inputs by name.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from serving.errors import APIError
from serving.exceptions import FeatureStoreRefused, FeatureStoreUnavailable, ModelMismatch
from serving.features import Event, feature_store, parse_event
from serving.metrics import (
    FEATURE_FETCH_DURATION,
    INFERENCE_DURATION,
    SCORES,
    decision_counters,
)
from serving.model import feature_positions, model_holder

bp = Blueprint("predict", __name__)


@bp.post("/predict")
def predict() -> Response:
    body = request.get_json()  # 415 unless a JSON content type, 400 unless valid JSON
    events = _events(body)
    model = model_holder().current  # this one model for the whole request, even mid-swap
    if model is None:
        raise APIError(503, "no model loaded yet: the registry has no usable production model")
    started = time.perf_counter()
    try:
        features = feature_store().fetch(model.database, model.deployment, events)
        inputs = model.inputs(features)
    except FeatureStoreUnavailable as exc:  # locked, unreachable: retrying can help
        current_app.logger.warning("%s", exc)
        raise APIError(503, "the feature store is unavailable, retry later",
                       headers={"Retry-After": "1"}) from None
    except (FeatureStoreRefused, ModelMismatch) as exc:  # only the operator can fix these
        current_app.logger.error("cannot score with model %s: %s", model.version, exc)
        raise APIError(500, f"the server cannot score: {exc}") from None
    fetched = time.perf_counter()
    scores = model.predict(inputs)
    FEATURE_FETCH_DURATION.observe(fetched - started)
    INFERENCE_DURATION.observe(time.perf_counter() - fetched)

    threshold = model.threshold  # the model's own: a swap changes both at once
    frauds, oks = decision_counters(model.version)
    predictions: list[dict[str, Any]] = []
    for score in scores:
        fraud = score < threshold
        (frauds if fraud else oks).inc()
        SCORES.observe(score)
        predictions.append({"score": score, "decision": "fraud" if fraud else "ok"})
    if _explain():
        positions = feature_positions(features.names, model.feature_names)
        for prediction, row in zip(predictions, features.rows, strict=True):
            prediction["features"] = {name: row[column] for name, column
                                      in zip(model.feature_names, positions, strict=True)}
    if isinstance(body, list):
        return jsonify(model_version=model.version, threshold=threshold,
                       threshold_source=model.threshold_source, predictions=predictions)
    return jsonify({"model_version": model.version, **predictions[0], "threshold": threshold,
                    "threshold_source": model.threshold_source})


def _explain() -> bool:
    """?explain=1; the raw query string is looked at first, as parsing an empty one costs a
    one-event request more than scoring it."""
    return bool(request.query_string) and \
        request.args.get("explain", "0").lower() in {"1", "true", "yes"}


def _events(body: Any) -> list[Event]:
    """The request rows of a body: one event, or a batch (a JSON array) of them."""
    if not isinstance(body, list):
        return [parse_event(body)]
    limit = current_app.config["MAX_BATCH_SIZE"]
    if len(body) > limit:
        raise APIError(413, f"a batch has at most {limit} events, this one {len(body)}")
    if not body:
        raise APIError(400, "the batch is empty")
    return [parse_event(raw, f"[{i}]") for i, raw in enumerate(body)]
