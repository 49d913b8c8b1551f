"""Per-replica figures exported through Ray's metrics (Ray's Prometheus endpoint on each node),
refreshed whenever Serve asks a replica for its routing stats: the share of prompt tokens that
came from a cache (what cache-affine routing is for), queue depth, busy sequences, mean TTFT."""
from __future__ import annotations

from typing import Any, Iterable

from ray.util.metrics import Gauge

_TAGS = ("replica",)


class ReplicaMetrics:
    def __init__(self, replica_id: str):
        self._tags = {"replica": replica_id}
        self.cached_ratio = Gauge("lmfast_serve_cached_prompt_ratio",
                                  "Prompt tokens taken from the KV cache or a cache tier, over all prompt tokens",
                                  tag_keys=_TAGS)
        self.queue_depth = Gauge("lmfast_serve_queue_depth", "Requests waiting beyond the engine sequences",
                                 tag_keys=_TAGS)
        self.busy = Gauge("lmfast_serve_busy_sequences", "Requests the engines hold", tag_keys=_TAGS)
        self.ttft = Gauge("lmfast_serve_mean_ttft_seconds", "Mean time to first token since the replica started",
                          tag_keys=_TAGS)

    def update(self, counters: Iterable[dict[str, Any]], busy: int, queued: int, app_metrics: Any) -> None:
        evaluated = cached = 0
        for c in counters:
            evaluated += c.get("prompt_tokens_evaluated", 0)
            cached += c.get("prompt_tokens_cached", 0) + c.get("prompt_tokens_restored", 0)
        if evaluated + cached:
            self.cached_ratio.set(cached / (evaluated + cached), tags=self._tags)
        self.queue_depth.set(queued, tags=self._tags)
        self.busy.set(busy, tags=self._tags)
        mean = _mean_ttft(app_metrics)
        if mean is not None:
            self.ttft.set(mean, tags=self._tags)


def _mean_ttft(app_metrics: Any) -> float | None:
    """The mean of the server app's TTFT histogram over all its models."""
    total = count = 0.0
    for family in app_metrics.ttft.collect():
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    return total / count if count else None
