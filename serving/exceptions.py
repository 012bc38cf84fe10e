"""Errors of the predict server and the model registry."""

from fraudflow.exceptions import FraudFlowError


class ServingError(FraudFlowError):
    """Base class for serving errors."""


class RegistryError(ServingError):
    """A model version or the production pointer is missing or unreadable."""
