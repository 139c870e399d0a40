"""The models a server holds: each a package, its engine instances and its batcher."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sampan.errors import ConfigError, DataError, NotFoundError, SampanError
from sampan.package import Package
from sampan.runtime.engine import Backend, create_engine
from sampan.serving.batcher import Batcher, BatchStats, Overloaded, Retired, merge_rows
from sampan.serving.metrics import Metrics
from sampan.serving.statistics import ModelStatistics
from sampan.store import Store
from sampan.tasks.base import Task, get_task

log = logging.getLogger("sampan.server")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class ModelSettings:
    """One model's own engine and batching settings; None keeps the server's."""

    backend: str | None = None
    device: str | None = None
    instances: int | None = None
    threads: int | None = None
    max_batch_size: int | None = None
    max_wait_ms: float | None = None
    max_queue: int | None = None
    timeout_s: float | None = None

    @classmethod
    def of(cls, settings: ServeSettings) -> ModelSettings:
        """A server's own values of these settings (to check them as a model's are)."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    def validate(self) -> None:
        """Every bound broken, at once (the batcher checks its own again when it is built)."""
        problems = [
            f"{name} must be >= {least} (got {value})"
            for name, least in (
                ("instances", 1),
                ("threads", 1),
                ("max_batch_size", 1),
                ("max_wait_ms", 0),
                ("max_queue", 1),
            )
            if (value := getattr(self, name)) is not None and value < least
        ]
        if self.timeout_s is not None and not 0 < self.timeout_s < math.inf:
            problems.append(f"timeout_s must be > 0 and finite (got {self.timeout_s})")
        if self.max_wait_ms is not None and not math.isfinite(self.max_wait_ms):
            problems.append(f"max_wait_ms must be finite (got {self.max_wait_ms})")
        if problems:
            raise ConfigError("; ".join(problems) + ".")


def model_settings(values: Any, where: str = "model settings") -> dict[str, ModelSettings]:
    """{model name: ModelSettings} from a mapping of name -> {setting: value} (a YAML file's),
    every problem of every model in one ConfigError."""
    from sampan.config import build_config

    if not isinstance(values, dict):
        raise ConfigError(f"{where} must map model names to their settings.")
    found: dict[str, ModelSettings] = {}
    problems: list[str] = []
    for name, settings in values.items():
        try:
            check_model_name(str(name))
            if not isinstance(settings, dict):
                raise ConfigError(f"its settings must be a mapping, not {settings!r}.")
            found[str(name)] = build_config(ModelSettings, settings, {})
        except ConfigError as exc:
            problems.append(f"{name}: {str(exc).removeprefix('Invalid configuration: ')}")
    if problems:
        raise ConfigError(f"Invalid {where}: " + " ".join(problems))
    return found


def load_model_settings(path: Path | str) -> dict[str, ModelSettings]:
    """Per-model settings from a YAML file: model name -> {max_batch_size: 8, ...}."""
    from sampan.config import load_yaml

    return model_settings(load_yaml(path, option_keys=False), f"model settings in {path}")


@dataclass
class ServeSettings:
    backend: str = "auto"
    device: str = "auto"
    instances: int = 1
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 256
    timeout_s: float = 30.0  # how long a request may wait for its answer
    max_body_bytes: int = 16 * 2**20
    spin: bool = False  # let onnxruntime's threads busy-wait between runs (off: cores for I/O)
    # With spin off: one-row batches (a lone caller) run on a second onnxruntime session whose
    # threads spin, 0.3-0.8 ms quicker at concurrency 1 (benchmarks/serving.py); batches of
    # several rows keep the non-spinning one. See OnnxRuntimeBackend.
    lone_spin: bool = True
    threads: int | None = None  # intra-op threads per engine instance (None: the backend's own)
    # The interpreter's GIL switch interval while the server runs (None: leave it). Between
    # engine calls an engine thread runs a little Python (hand the results back, take the next
    # batch) and waits for the GIL behind the busy event loop: up to 5 ms by default, 3.7 ms
    # per batch (median) at concurrency 32 on 2 cores, with the engine idle meanwhile; 0.1 ms
    # cut that to 0.5-0.9 ms and gave 7-23% more throughput (benchmarks/serving.py).
    switch_interval_ms: float | None = 0.1
    admin_token: str | None = field(default=None, repr=False)  # None: admin endpoints are off
    # Origins whose browser pages may call this server (CORS); "*" for any. () : none (the
    # console is served from the server's own origin and needs none).
    cors_origins: tuple[str, ...] = ()
    # Per model name: settings of its own over the ones above (--model-settings FILE).
    models: dict[str, ModelSettings] = field(default_factory=dict)

    def for_model(self, name: str) -> ServeSettings:
        """These settings with name's own over them."""
        own = self.models.get(name)
        if own is None:
            return self
        changes = {k: v for k, v in dataclasses.asdict(own).items() if v is not None}
        return dataclasses.replace(self, **changes)


@dataclass
class ServedModel:
    package: Package
    task: Task
    engines: list[Backend]
    batcher: Batcher
    settings: ServeSettings = field(default_factory=ServeSettings)  # this model's own
    extra: dict[str, Any] = field(default_factory=dict)
    statistics: ModelStatistics | None = None  # Triton-style counters of this version

    @property
    def name(self) -> str:
        return self.package.manifest.name

    @property
    def engine(self) -> Backend:
        return self.engines[0]

    @functools.cached_property
    def contract(self) -> dict[str, Any]:
        """The preprocessing contract with what it names in the package loaded (tokenizer)."""
        return self.task.bind(self.package.manifest.preprocessing, self.package.path)

    @functools.cached_property
    def input_details(self) -> dict[str, Any]:
        """What a caller must know to send an input, beyond its shape (the task's)."""
        return self.task.input_details(self.contract)

    @property
    def takes_text(self) -> bool:
        """Whether raw inputs are texts: the task's network takes named inputs (token ids and
        mask) that its collate makes from strings."""
        return self.engine.named_inputs is not None

    def prepare(
        self, raws: list[Any], options: dict[str, Any] | None = None
    ) -> tuple[Any, list[dict[str, Any]]]:
        """Raw inputs (texts, image bytes) decoded and collated into the model's input rows,
        with what each answer should note (a truncated text, say); options override the
        contract for this call (a request's "truncate": false)."""
        contract = {**self.contract, **options} if options else self.contract
        samples = []
        for index, raw in enumerate(raws):
            try:
                samples.append(self.task.decode(raw, contract))
            except DataError as exc:
                if len(raws) == 1:
                    raise
                # which one, when a request carries several
                raise DataError(f"Input {index}: {exc}") from None
        return self.task.collate(samples, contract), [self.task.notes(s) for s in samples]

    def check_rows(self, rows: Any) -> Any:
        """Per-request validation, before batching: one bad request must not fail a batch."""
        engine = self.engine
        if engine.named_inputs is not None:
            return engine.check(rows)
        if not isinstance(rows, np.ndarray) or rows.dtype != engine.input_dtype:
            raise DataError(f"Inputs must be {engine.input_dtype} tensors.")
        if rows.ndim != len(engine.input_shape) + 1 or rows.shape[1:] != engine.input_shape:
            raise DataError(
                f"Input shape {list(rows.shape)} does not fit {self.name}, which "
                f"takes [N, {', '.join(map(str, engine.input_shape))}]."
            )
        if len(rows) == 0:
            raise DataError("The request holds no inputs.")
        return rows

    def warm_up(self) -> None:
        """Run every engine on the task's made-up input, as one row and as a full batch,
        before the model is ready: first runs allocate memory and pick kernels (seconds on a
        GPU, a TensorRT engine's build), which callers should not wait for, and a model whose
        engine cannot run fails its load instead of its first callers' requests."""
        example = self.task.example_json(self.engine.input_shape, self.input_details)
        if example is None:
            return
        started = time.perf_counter()
        rows = self.check_rows(self.prepare([self.task.from_json(example)])[0])
        batch = self.batcher.max_batch_size
        runs = [(rows, 1), (merge_rows([rows] * batch), batch)]  # arrays or named arrays
        for engine in self.engines:
            for sample, count in runs:
                try:
                    outputs = engine.predict(sample)
                except SampanError:
                    raise
                except Exception as exc:  # the engine's own (onnxruntime, torch) error
                    raise SampanError(
                        f"{self.package.ref} failed its warm-up run of {count} row(s) on "
                        f"{engine.name}/{engine.device}: {type(exc).__name__}: {exc}"
                    ) from exc
                if len(outputs) != count:
                    raise SampanError(
                        f"{self.package.ref} answered {len(outputs)} rows for {count} in its "
                        f"warm-up run on {engine.name}; it cannot be batched."
                    )
        log.info(
            "%s warmed up in %.2f s (%d engine(s), 1 and %d rows)",
            self.package.ref,
            time.perf_counter() - started,
            len(self.engines),
            batch,
        )

    def describe(self) -> dict[str, Any]:
        m = self.package.manifest
        return {
            "name": m.name,
            "version": m.version,
            "task": m.task,
            "architecture": m.architecture.get("preset") or m.architecture["name"],
            "labels": m.labels,
            "backend": self.engine.name,
            "device": self.engine.device,
            "instances": len(self.engines),
            "input_shape": list(self.engine.input_shape),
            "metrics": {k: v for k, v in m.metrics.items() if isinstance(v, (int, float))},
            "exports": sorted(m.exports),
            "max_batch_size": self.batcher.max_batch_size,
            "max_wait_ms": self.settings.max_wait_ms,
            "max_queue": self.settings.max_queue,
            "timeout_s": self.settings.timeout_s,
            "input_details": self.input_details,
        }


@functools.lru_cache(maxsize=4096)
def _is_model_name(name: str) -> bool:
    return bool(_SAFE_NAME.match(name)) and ".." not in name


def check_model_name(name: str) -> str:
    if not _is_model_name(name):
        raise ConfigError(f"{name!r} is not a model name (letters, digits, '.', '_', '-').")
    return name


class ModelHost:
    """Loads packages onto engines, starts their batchers, and finds them by name."""

    def __init__(self, settings: ServeSettings, metrics: Metrics, store: Store | None = None):
        self.settings = settings
        self.metrics = metrics
        self.store = store or Store()
        self.models: dict[str, ServedModel] = {}
        self.draining = False
        self._lock = asyncio.Lock()
        # (name, version) -> its counters, kept when a version is replaced or unloaded, so
        # that loading it again goes on counting (Triton's: since the server started)
        self._statistics: dict[tuple[str, str], ModelStatistics] = {}

    def get(self, name: str) -> ServedModel:
        check_model_name(name)
        if self.draining:
            raise Overloaded("The server is shutting down; retry on another replica.")
        try:
            return self.models[name]
        except KeyError:
            raise NotFoundError(
                f"No model {name!r} is loaded (loaded: {', '.join(sorted(self.models)) or 'none'})."
            ) from None

    def _build(self, ref: str) -> ServedModel:
        from sampan.runtime.tuning import choose_backend

        package = self.store.open(ref)
        name = package.manifest.name
        s = self.settings.for_model(name)
        backend, options = s.backend, dict[str, Any]()
        if backend == "auto":
            backend, options = choose_backend(package, self.store.home)
        # backends without threads to spin ignore these
        options = {**options, "spin": s.spin, "lone_spin": s.lone_spin}
        if s.threads:
            options["threads"] = s.threads
        engines = [
            create_engine(package, backend=backend, device=s.device, **options)
            for _ in range(s.instances)
        ]
        metrics = self.metrics

        def on_batch(rows: int, seconds: float) -> None:
            metrics.batch_size.labels(name).observe(rows)
            metrics.inference.labels(name).observe(seconds)

        version = str(package.manifest.version)
        key = (name, version)  # a version loaded before goes on counting
        statistics = self._statistics.get(key) or ModelStatistics(name, version)
        stats = BatchStats(
            on_batch=on_batch,
            on_queue=lambda depth: self.metrics.queue_depth.labels(name).set(depth),
            on_calls=lambda calls: self.metrics.engine_calls.labels(name).observe(calls),
            on_executed=statistics.executed,
        )
        batcher = Batcher(
            [e.predict for e in engines],
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue,
            stats=stats,
        )
        task = get_task(package.manifest.task)
        served = ServedModel(package, task, engines, batcher, s, statistics=statistics)
        served.warm_up()  # binds the contract too (a tokenizer loads now, not on a request)
        self._statistics[key] = statistics  # listed once it could be served
        return served

    async def load(self, ref: str) -> ServedModel:
        """Load (or replace) a model; the old version drains before it stops."""
        if self.draining:
            raise Overloaded("The server is shutting down; load the model on another replica.")
        served = await asyncio.to_thread(self._build, ref)
        await served.batcher.start()
        async with self._lock:
            old = self.models.get(served.name)
            self.models[served.name] = served
        if old is not None:
            await self._retire(old)
        return served

    async def unload(self, name: str) -> None:
        served = self.get(name)
        async with self._lock:
            self.models.pop(name, None)
        await self._retire(served)

    async def _retire(self, served: ServedModel) -> None:
        """Close a batcher to new requests, let what it holds finish, then stop it."""
        served.batcher.close()
        await served.batcher.drain(served.settings.timeout_s)
        await served.batcher.stop()

    async def submit_call(
        self, served: ServedModel, rows: Any, state: Any
    ) -> tuple[ServedModel, Any]:
        """submit() for one HTTP call: first charge quotas counted in task units (the
        platform's `admit` hook in the call's state, if any), then note the units and the
        version that answered in the state, for usage metering."""
        units = served.task.units(rows)
        admit = getattr(state, "admit", None)
        if admit is not None:
            await admit(units)
        served, outputs = await self.submit(served, rows)
        state.units, state.version = units, served.package.manifest.version
        return served, outputs

    async def submit(self, served: ServedModel, rows: np.ndarray) -> tuple[ServedModel, Any]:
        """Run rows through served's batcher; (the model that answered, its outputs).

        A request that found a model just before it was replaced goes to the new version,
        so replacing a model at run time fails no caller. The version that answers (or
        fails) counts the request in its statistics."""
        started = time.perf_counter()
        try:
            while True:
                try:
                    outputs = await served.batcher.submit(rows, timeout=served.settings.timeout_s)
                    break
                except Retired:
                    current = self.models.get(served.name)
                    if self.draining or current is served:
                        raise Overloaded(
                            "The server is shutting down; retry on another replica."
                        ) from None
                    if current is None:
                        raise NotFoundError(f"Model {served.name!r} was unloaded.") from None
                    served, rows = current, current.check_rows(rows)
        except Exception:  # a caller that hung up (cancelled) is not the model's failure
            if served.statistics is not None:
                served.statistics.request(False, time.perf_counter() - started)
            raise
        if served.statistics is not None:
            served.statistics.request(True, time.perf_counter() - started)
        return served, outputs

    def statistics(self, name: str | None = None, version: str | None = None) -> list[Any]:
        """Triton-style statistics of the loaded models (or of one, or of one version), each
        with every version this server has loaded: counters outlive a version's replacement."""
        names = sorted(self.models) if name is None else [self.get(name).name]
        found = [
            stats.as_triton()
            for (model, ver), stats in sorted(self._statistics.items())
            if model in names and version in (None, ver)
        ]
        if version is not None and not found:
            raise NotFoundError(f"{name} version {version} has not been loaded by this server.")
        return found

    @property
    def idle(self) -> bool:
        return all(m.batcher.depth == 0 and m.batcher.busy == 0 for m in self.models.values())

    async def shutdown(self) -> None:
        self.draining = True
        for served in list(self.models.values()):
            await self._retire(served)
