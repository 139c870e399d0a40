"""Prometheus metrics of one server (own registry, so several servers can live in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CALL_BUCKETS = (1, 2, 3, 4, 8, 16, 32)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "sampan_requests", "HTTP requests", ["model", "protocol", "code"], registry=r
        )
        self.latency = Histogram(
            "sampan_request_seconds",
            "Request latency",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("sampan_queue_depth", "Requests waiting", ["model"], registry=r)
        self.batch_size = Histogram(
            "sampan_batch_size", "Rows per batch", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.inference = Histogram(
            "sampan_inference_seconds",
            "Engine time per batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_calls = Histogram(
            "sampan_engine_calls",
            "Engine calls per batch (more than one: text split into length groups)",
            ["model"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
