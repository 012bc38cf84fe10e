"""Errors of the benchmarks."""

from core.exceptions import FraudFlowError


class BenchmarkError(FraudFlowError):
    """A benchmark cannot run on this machine as it is."""


class LoadGeneratorMissing(BenchmarkError):
    """The HTTP load generator (wrk) is not installed."""
