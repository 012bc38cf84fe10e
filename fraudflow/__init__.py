"""FraudFlow: real-time click-fraud pipeline (Kafka → OpenMLDB features → LightGBM)."""

__version__ = "0.1.0"
