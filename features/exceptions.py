"""Errors of the feature store seam."""

from core.exceptions import FraudFlowError


class FeatureStoreError(FraudFlowError):
    """Base class for feature-store errors (both engines)."""


class SQLValidationError(FeatureStoreError):
    """OpenMLDB's own compiler rejected the SQL; the message is the compiler's."""


class UnsupportedStatementError(FeatureStoreError):
    """The embedded engine does not implement this statement or construct (it never guesses)."""


class StoreURLError(FeatureStoreError):
    """The feature-store URL cannot be understood."""


class CatalogError(FeatureStoreError):
    """A database, table or deployment is missing or already exists."""


class DataError(FeatureStoreError):
    """A row or file does not fit the table's schema."""
