"""Errors raised by the ingest package."""

from __future__ import annotations

from fraudflow.exceptions import FraudFlowError


class IngestError(FraudFlowError):
    """Base class for ingest failures (Kafka broker, producers, consumers)."""


class BrokerError(IngestError):
    """The local Kafka broker could not be fetched, started, reached or stopped."""
