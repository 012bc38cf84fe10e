"""Errors raised by the ingest package."""

from __future__ import annotations

from core.exceptions import FraudFlowError, TransientError


class IngestError(FraudFlowError):
    """Base class for ingest failures (Kafka broker, producers, consumers)."""


class SinkUnavailableError(IngestError, TransientError):
    """A sink's store, lake or dead-letter topic is away for now: the run loop retries."""
