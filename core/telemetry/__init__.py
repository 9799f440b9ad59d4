"""Telemetry shared by every process: Prometheus metrics, the metrics server, traces, logs."""
