"""Errors of the feature store seam, each classed as transient or permanent for its callers."""

from core.exceptions import FraudFlowError, PermanentError, TransientError


class FeatureStoreError(FraudFlowError):
    """Base class for feature-store errors (both engines)."""


class StoreUnavailableError(FeatureStoreError, TransientError):
    """The store did not answer (locked, unreachable, timed out): retrying can help."""


class SQLValidationError(FeatureStoreError, PermanentError):
    """OpenMLDB's own compiler rejected the SQL; the message is the compiler's."""


class UnsupportedStatementError(FeatureStoreError, PermanentError):
    """The embedded engine does not implement this statement or construct (it never guesses)."""


class StoreURLError(FeatureStoreError, PermanentError):
    """The feature-store URL cannot be understood."""


class CatalogError(FeatureStoreError, PermanentError):
    """A database, table or deployment is missing or already exists."""


class DataError(FeatureStoreError, PermanentError):
    """A row or file does not fit the table's schema."""
