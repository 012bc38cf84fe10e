"""The root of every error FraudFlow raises on purpose, and the shared core's own errors.

Each package derives its errors from `FraudFlowError` in its own ``exceptions.py``. Where an
error crosses a seam, its class says what the caller can do about it: `TransientError` (retry
with backoff) or `PermanentError` (dead-letter the input or fail fast with the cause).
"""


class FraudFlowError(Exception):
    """Base class: catch this to handle any FraudFlow error (the CLI turns it into exit code 2)."""


class TransientError(FraudFlowError):
    """Retrying can help: a store is locked or a service is unreachable for now."""


class PermanentError(FraudFlowError):
    """Retrying cannot help: the input, the catalog or the code is wrong."""


class ConfigError(FraudFlowError):
    """An environment variable or flag has a value FraudFlow cannot use."""


class RegistryError(FraudFlowError):
    """A model version or the production pointer is missing or unreadable."""


class LakeError(PermanentError):
    """The lake's layout marker is unreadable."""
