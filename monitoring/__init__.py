"""Prometheus configuration, alert and recording rules, Grafana dashboards (see README.md)."""
