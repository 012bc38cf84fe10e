"""The feature seam: OpenMLDB SQL written once, run on a real cluster or the embedded engine."""

from features.connection import EmbeddedConnection, connect, is_embedded
from features.exceptions import (
    FeatureStoreError,
    SQLValidationError,
    UnsupportedStatementError,
)

__all__ = [
    "EmbeddedConnection",
    "FeatureStoreError",
    "SQLValidationError",
    "UnsupportedStatementError",
    "connect",
    "is_embedded",
]
