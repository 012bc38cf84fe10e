"""The feature seam: OpenMLDB SQL written once, run on a real cluster or the embedded engine."""

from features.connection import (
    Connection,
    EmbeddedConnection,
    classify_store_error,
    connect,
    connect_embedded,
    is_embedded,
)
from features.exceptions import (
    FeatureStoreError,
    SQLValidationError,
    UnsupportedStatementError,
)

__all__ = [
    "Connection",
    "EmbeddedConnection",
    "FeatureStoreError",
    "SQLValidationError",
    "UnsupportedStatementError",
    "classify_store_error",
    "connect",
    "connect_embedded",
    "is_embedded",
]
