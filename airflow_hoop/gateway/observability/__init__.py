"""Operating the gateway: structured logs (``logs``) and Prometheus metrics (``metrics``).
Their settings are ``gateway/observability_settings.py``; the routes (liveness, readiness,
``/metrics``) are ``gateway/routes/health.py``."""
