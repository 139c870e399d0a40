"""Per-model statistics in the shape of Triton's statistics extension
(`GET /v2/models[/{name}[/versions/{version}]]/stats`, tritonclient's
`get_inference_statistics`): cumulative counts and nanoseconds since the model version was
first loaded, for clients and dashboards written against Triton. /metrics has the same
activity as Prometheus histograms."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sampan.serving.batcher import Execution

PHASES = ("compute_input", "compute_infer", "compute_output")


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, count: int, seconds: float) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def as_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class ModelStatistics:
    """One model version's counters, added and read on the event loop only (the batcher
    reports executions there), so they need no lock."""

    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0  # rows answered
    execution_count: int = 0  # engine calls (a text batch's length groups: one each)
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    phases: dict[str, _Duration] = field(default_factory=lambda: {p: _Duration() for p in PHASES})
    batches: dict[int, dict[str, _Duration]] = field(default_factory=dict)

    def executed(self, run: Execution) -> None:
        """A batch that ran, with the callers it answered (on the event loop, just before
        they get their rows). Each answered request is counted in the per-request phases with
        its batch's whole time, as Triton counts them; each engine call (a length group of a
        text batch is one) counts once under its own rows in the per-batch-size entries."""
        total = sum(rows for rows, _ in run.calls) or 1
        self.inference_count += run.rows
        self.execution_count += len(run.calls)
        self.queue.add(run.requests, run.queued_s)
        for phase, seconds in zip(PHASES, (run.input_s, run.infer_s, run.output_s)):
            self.phases[phase].add(run.requests, seconds * run.requests)
        for rows, seconds in run.calls:
            by_size = self.batches.setdefault(rows, {p: _Duration() for p in PHASES})
            share = rows / total  # joining and putting back: by rows
            by_size["compute_input"].add(1, run.input_s * share)
            by_size["compute_infer"].add(1, seconds)
            by_size["compute_output"].add(1, run.output_s * share)

    def request(self, ok: bool, seconds: float) -> None:
        """A request to this model answered (ok) or failed, seconds after it was submitted."""
        self.last_inference_ms = int(time.time() * 1000)
        (self.success if ok else self.fail).add(1, seconds)

    def as_triton(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_json(),
                "fail": self.fail.as_json(),
                "queue": self.queue.as_json(),
                **{p: d.as_json() for p, d in self.phases.items()},
                "cache_hit": {"count": 0, "ns": 0},  # no response cache
            },
            "batch_stats": [
                {"batch_size": size, **{p: d.as_json() for p, d in phases.items()}}
                for size, phases in sorted(self.batches.items())
            ],
        }
