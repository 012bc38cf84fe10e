"""The predict server's Flask app factory; gunicorn runs `serving:create_app()` per worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Request

from core.config import get_settings
from serving import admin, errors, features, health, metrics, model, predict
from serving.errors import APIError
from serving.json_provider import OrjsonProvider


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app, configured from FraudFlow's settings, then overridden by `config`."""
    app = Flask(__name__)
    app.request_class = _APIRequest
    app.json = OrjsonProvider(app)  # replies keep the documented key order
    settings = get_settings()
    app.config.from_mapping(
        STORE_URL=settings.store_url,
        DATABASE=settings.database,
        DEPLOYMENT=settings.deployment,
        MODEL_DIR=str(settings.model_dir),
        ADMIN_TOKEN=settings.admin_token,
        # Unset: each model decides at its own operating point (see serving.model.threshold_for)
        THRESHOLD=settings.predict_threshold,
        MAX_BATCH_SIZE=1000,
        MAX_CONTENT_LENGTH=1024 * 1024,  # a full batch is ~120 kB; larger bodies get a 413
        MODEL_POLL_INTERVAL=1.0,  # seconds between checks of the registry's production pointer
    )
    if config is not None:
        app.config.from_mapping(config)

    metrics.init_app(app)
    errors.init_app(app)
    features.init_app(app)
    model.init_app(app)
    app.register_blueprint(predict.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(health.bp)
    return app


class _APIRequest(Request):
    """Tells the client what is wrong with a body that is not JSON (Flask's default 400
    says nothing outside debug mode)."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:
            raise APIError(415, "the body must be JSON, sent as Content-Type: application/json")
        raise APIError(400, f"the body is not valid JSON: {e}")
