"""The root of every error FraudFlow raises on purpose; each package derives its own from it."""


class FraudFlowError(Exception):
    """Base class: catch this to handle any FraudFlow error (the CLI turns it into exit code 2)."""
