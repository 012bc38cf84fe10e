"""Errors of the predict server."""

from core.exceptions import FraudFlowError


class ServingError(FraudFlowError):
    """Base class for serving errors."""
