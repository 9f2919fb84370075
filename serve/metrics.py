"""The application's metrics, exported by Ray's metrics agent (Prometheus) as ``climate_serve_*``
(Ray prefixes them: ``ray_climate_serve_*``, counters ending in ``_total``).

Each replica makes its own :class:`ServeMetrics` (Ray aggregates them by tag); nothing is
created at import.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
BATCH_BOUNDARIES = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0]


class ServeMetrics:
    """Counters, histograms and gauges of one replica."""

    def __init__(self) -> None:
        self.requests = Counter(
            "climate_serve_requests_total",
            description="HTTP requests answered, by route template and status code.",
            tag_keys=("route", "status"),
        )
        self.latency = Histogram(
            "climate_serve_request_seconds",
            description="Time to answer an HTTP request, by route template.",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=("route",),
        )
        self.batch_size = Histogram(
            "climate_serve_predict_batch_size",
            description="Requests stacked into one model rollout.",
            boundaries=BATCH_BOUNDARIES,
            tag_keys=("model",),
        )
        self.model_loads = Counter(
            "climate_serve_model_loads_total",
            description="Model versions loaded by a predictor replica, by outcome (ok, failed).",
            tag_keys=("model", "outcome"),
        )
        self.model_switches = Counter(
            "climate_serve_default_model_switches_total",
            description="Attempts to switch the default model after a promotion, by outcome "
            "(ok, failed: the old default stays).",
            tag_keys=("model", "outcome"),
        )
        self.run_loads = Counter(
            "climate_serve_forecast_run_loads_total",
            description="Committed forecast runs loaded by an ingress replica, by outcome "
            "(ok, failed: the old run stays).",
            tag_keys=("outcome",),
        )
        self.run_served = Gauge(
            "climate_serve_forecast_run_committed_seconds",
            description="Commit time (unix seconds) of the forecast run served, by run id; "
            "0 for a run no longer served.",
            tag_keys=("run_id",),
        )
        self.rate_limit_degraded = Counter(
            "climate_serve_rate_limit_degraded_total",
            description="Redis outages a replica met: its rate limits were then decided "
            "in-process (per replica) until Redis answered again.",
        )
        self.database_errors = Counter(
            "climate_database_errors_total",
            description="Database reads that failed (unreachable, refused, unreadable), by "
            "component: ingress (the ledgers' poll), api_keys (key checks).",
            tag_keys=("component",),
        )
        self.run_age = Gauge(
            "climate_serve_forecast_run_age_seconds",
            description="Seconds since the served forecast run was committed.",
        )
        # Ray exports the autoscaler's target (ray_serve_autoscaling_target_replicas) but not
        # the configured bounds: the alert on replicas at their maximum compares with these.
        self.replicas_max = Gauge(
            "climate_serve_replicas_max",
            description="Configured max_replicas of a deployment of the application.",
            tag_keys=("application", "deployment"),
        )
        self.replicas_min = Gauge(
            "climate_serve_replicas_min",
            description="Configured min_replicas of a deployment of the application.",
            tag_keys=("application", "deployment"),
        )
