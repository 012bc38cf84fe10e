"""Errors raised by the ingest package."""

from __future__ import annotations

from core.exceptions import FraudFlowError


class IngestError(FraudFlowError):
    """Base class for ingest failures (Kafka broker, producers, consumers)."""

