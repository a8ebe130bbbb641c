"""What operators need: liveness and readiness endpoints (health.py), Prometheus metrics
(metrics.py), and the JSON answer of a server error while the database or Redis is away
(errors.py). docs/deployment.md."""
