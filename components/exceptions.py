"""Errors of the local real components."""

from core.exceptions import FraudFlowError


class ComponentError(FraudFlowError):
    """A local component could not be fetched, configured, started, reached or stopped."""


class BrokerError(ComponentError):
    """The local Kafka broker could not be fetched, started, reached or stopped."""


class SparkError(ComponentError):
    """OpenMLDB's batch engine on Spark could not be fetched, started, reached or run."""


class DolphinSchedulerError(ComponentError):
    """The local DolphinScheduler server could not be fetched, configured, started, reached or
    stopped, or its REST API refused a request."""
