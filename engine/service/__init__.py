"""The long-lived process: one job's resources, follow mode, progress, logs, the event journal,
Prometheus metrics and health endpoints."""
