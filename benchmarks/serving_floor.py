"""The predict benchmark's floor: /predict reading the JSON body and answering a constant,
bare Flask and nothing between, run under the predict server's gunicorn settings.

Its own module, importing Flask only: its workers hold no more than a bare Flask app would.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request


def create_floor_app() -> Flask:
    app = Flask(__name__)

    @app.post("/predict")
    def predict() -> Response:
        request.get_json()
        return jsonify(score=0.5, decision="ok", model_version="floor")

    @app.get("/readyz")
    def readyz() -> Response:
        return jsonify(ready=True)

    return app
