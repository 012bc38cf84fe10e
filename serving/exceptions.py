"""Errors of the predict server, each classed by what the client can do about it: retry
(transient → 503) or nothing (permanent → 500, logged for the operator)."""

from core.exceptions import FraudFlowError, PermanentError, TransientError


class ServingError(FraudFlowError):
    """Base class for serving errors."""


class FeatureStoreUnavailable(ServingError, TransientError):
    """The feature store did not answer a request-mode call (locked, unreachable)."""


class FeatureStoreRefused(ServingError, PermanentError):
    """The feature store answered with a refusal no retry changes (a missing deployment, a
    catalog or data error): the operator has to act."""


class ModelRejected(ServingError, PermanentError):
    """A model that cannot serve: unreadable, or not fit for the deployment's features."""


class ModelMismatch(ServingError, PermanentError):
    """The serving model and its deployment disagree on the features (the deployment changed
    under a loaded model)."""


class NoModelToServe(ServingError):
    """The registry has no production model, or no earlier one to roll back to."""
