"""The real components FraudFlow runs locally (Kafka broker, ...): fetch, configure, start,
health-check, stop. Used by the CLI, the demo and the tests; the product code only talks to them.
"""
