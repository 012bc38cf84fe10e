"""Shared pytest fixtures; component fixtures live in their own plugin modules."""

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.registry import Registry
from serving import create_app
from tests.serving_helpers import ADMIN_TOKEN, ServingData, build_serving_data, registry_serving

pytest_plugins = ["tests.fixtures_kafka", "tests.fixtures_dolphinscheduler"]


# --- the predict server (flaskr style: `app` and `client`) ----------------------------------

@pytest.fixture(scope="session")
def serving_data(tmp_path_factory: pytest.TempPathFactory) -> ServingData:
    """The sample's clicks in an embedded store (online and offline) and two small models."""
    return build_serving_data(tmp_path_factory.mktemp("serving"))


@pytest.fixture
def model_registry(tmp_path: Path, serving_data: ServingData) -> Registry:
    """A registry of this test's own, serving model A."""
    registry, _ = registry_serving(tmp_path / "models", serving_data.model_a)
    return registry


@pytest.fixture
def app(serving_data: ServingData, model_registry: Registry) -> Flask:
    return create_app({
        "TESTING": True,
        "STORE_URL": serving_data.store_url,
        "MODEL_DIR": str(model_registry.root),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "MODEL_POLL_INTERVAL": 0,  # no polling thread: tests call follow_registry() instead
    })


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
