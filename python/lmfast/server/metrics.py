"""Prometheus metrics (``GET /metrics``): requests by endpoint and status, tokens, TTFT and
request duration, and per-model gauges read at scrape time (queue depth, busy sequences)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from .models import ModelManager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _ModelGauges:
    """Gauges computed from the model manager at each scrape."""

    def __init__(self, manager: "ModelManager"):
        self._manager = manager

    def collect(self) -> Iterable[Any]:
        loaded = GaugeMetricFamily("lmfast_loaded_models", "Loaded model instances")
        busy = GaugeMetricFamily("lmfast_busy_sequences", "Requests the engine holds, per model", labels=["model"])
        queue = GaugeMetricFamily("lmfast_queue_depth", "Requests waiting beyond the parallel sequences",
                                  labels=["model"])
        instances = self._manager.loaded_instances()
        loaded.add_metric([], len(instances))
        for inst in instances:
            busy.add_metric([inst.identifier], self._manager.busy_sequences(inst.identifier))
            queue.add_metric([inst.identifier], self._manager.queued(inst))
        return [loaded, busy, queue]


class Metrics:
    """One registry per app (tests start several apps in one process)."""

    def __init__(self, manager: "ModelManager"):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lmfast_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("lmfast_prompt_tokens", "Prompt tokens", ["model"], registry=r)
        self.cached_tokens = Counter("lmfast_cached_prompt_tokens", "Prompt tokens taken from the KV cache",
                                     ["model"], registry=r)
        self.restored_tokens = Counter("lmfast_restored_prompt_tokens",
                                       "Prompt tokens copied back from the host-memory or disk cache tier",
                                       ["model"], registry=r)
        self.generated_tokens = Counter("lmfast_generated_tokens", "Generated tokens", ["model"], registry=r)
        self.ttft = Histogram("lmfast_time_to_first_token_seconds", "Time to first token", ["model"],
                              buckets=_TTFT_BUCKETS, registry=r)
        self.duration = Histogram("lmfast_request_duration_seconds", "Request duration", ["endpoint"],
                                  buckets=_DURATION_BUCKETS, registry=r)
        r.register(_ModelGauges(manager))

    def record_prediction(self, model: str, stats: Any, ttft: float | None) -> None:
        self.prompt_tokens.labels(model).inc(stats.prompt_tokens_count or 0)
        self.cached_tokens.labels(model).inc(stats.cached_prompt_tokens_count or 0)
        self.restored_tokens.labels(model).inc(stats.restored_prompt_tokens_count or 0)
        self.generated_tokens.labels(model).inc(stats.predicted_tokens_count or 0)
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)

    def record_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.duration.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
