"""The predict server (Flask, served by gunicorn) and the model registry it serves from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The predict server's Flask app (see serving.app). Imported on call, so that importing
    `core.registry` or `serving.cli` does not load Flask, LightGBM and the server's
    Prometheus metrics into processes that do not serve (the CLI, the ingest consumers)."""
    from serving.app import create_app as create

    return create(config)
