"""Errors of the retraining workflow."""

from core.exceptions import FraudFlowError


class WorkflowError(FraudFlowError):
    """Base class: a workflow step, the runner or the DolphinScheduler rendering failed."""


class StepError(WorkflowError):
    """A step cannot do its work (missing input, no data in the window, …)."""


class PublishError(WorkflowError):
    """The predict servers did not all take the new model; the old one keeps serving."""


class GatewayError(WorkflowError):
    """The DolphinScheduler Java gateway cannot be reached or refused the workflow."""
