"""Every Prometheus metric of the ingest and archive consumers (one process each, own port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NAMESPACE = "fraudflow"

MESSAGES_CONSUMED = Counter(
    "consumer_messages_total", "Messages read from Kafka.",
    ["consumer", "topic"], namespace=NAMESPACE)
ROWS_WRITTEN = Counter(
    "consumer_rows_written_total", "Events durably written (online table or lake files).",
    ["consumer", "topic"], namespace=NAMESPACE)
INVALID_EVENTS = Counter(
    "consumer_invalid_events_total",
    "Messages that are not valid click events (the ingest consumer dead-letters them).",
    ["consumer", "topic", "reason"], namespace=NAMESPACE)
DEAD_LETTERS = Counter(
    "consumer_dead_letters_total", "Messages sent to the dead-letter topic.",
    ["consumer", "topic"], namespace=NAMESPACE)
BATCH_SIZE = Histogram(
    "consumer_batch_size", "Messages per written batch.", ["consumer"],
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000), namespace=NAMESPACE)
WRITE_DURATION = Histogram(
    "consumer_write_duration_seconds", "Time to durably write one batch and its offsets.",
    ["consumer"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    namespace=NAMESPACE)
WRITE_RETRIES = Counter(
    "consumer_write_retries_total", "Batch writes retried after a store or broker error.",
    ["consumer"], namespace=NAMESPACE)
PRODUCE_TO_WRITE = Histogram(
    "consumer_produce_to_write_seconds",
    "Per written batch, from its oldest event's Kafka timestamp to the durable write "
    "(freshness, worst case of the batch).",
    ["consumer"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60),
    namespace=NAMESPACE)
LAST_EVENT_TIME = Gauge(
    "consumer_last_event_timestamp_seconds",
    "Newest event time (click_time) written so far.", ["consumer"], namespace=NAMESPACE)
LAST_WRITE_TIME = Gauge(
    "consumer_last_write_timestamp_seconds", "Wall-clock time of the last durable write.",
    ["consumer"], namespace=NAMESPACE)
LAG = Gauge(
    "consumer_lag_messages", "Partition end offset minus the consumer group's position.",
    ["consumer", "topic", "partition"], namespace=NAMESPACE)
