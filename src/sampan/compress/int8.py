"""Compression of a package's ONNX export: INT8 post-training quantization with onnxruntime,
or fp16 for GPUs.

static: QDQ, per-channel weights, activations calibrated on real training samples (convnets).
dynamic: weights INT8, activations quantized on the fly (linear-heavy models, transformers).
fp16: weights and activations in half precision, inputs and outputs kept fp32 (GPUs).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sampan.errors import CompressionError, ConfigError, PackageError
from sampan.export.base import copy_contract_files, derived_fields
from sampan.export.onnx import ONNX_FILE
from sampan.package import Package
from sampan.registry import Registry
from sampan.runtime.reference import reference_samples
from sampan.store import Store
from sampan.tasks.base import get_task

# A quantizer writes an INT8 model from (fp32 model path, output path, package, options).
Quantizer = Callable[..., dict[str, Any]]
QUANTIZERS: Registry[Quantizer] = Registry("quantization method")


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over collated batches."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self._items = iter([{name: batch} for batch in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        pass


def _preprocess(source: Path, target: Path) -> Path:
    """Shape inference and graph clean-up that onnxruntime recommends before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Symbolic shape inference first, merging dims that conflict: without auto_merge it
    # fails on transformer graphs (MiniLM's position ids: Min(512, sequence) vs sequence),
    # and a failure leaves the whole model (sym_shape_infer_temp.onnx + a .data file) in the
    # working directory. ONNX's own shape inference is the fallback.
    shape_logger = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level = shape_logger.level
    shape_logger.setLevel(logging.ERROR)  # it warns of every dim it merges
    try:
        for skip_symbolic in (False, True):
            with contextlib.suppress(Exception):
                quant_pre_process(
                    str(source), str(target), skip_symbolic_shape=skip_symbolic, auto_merge=True
                )
                return target
    finally:
        shape_logger.setLevel(level)
    return source  # nothing worked: quantize the original


@QUANTIZERS.register("static")
def quantize_static(
    source: Path,
    target: Path,
    package: Package,
    calib: str | None = None,
    samples: int = 256,
    **_: Any,
) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    task = get_task(package.manifest.task)
    reference = reference_samples(package, calib, split="train", limit=samples)
    contract = package.manifest.preprocessing
    batches = [
        task.collate(reference.inputs[i : i + 32], contract)
        for i in range(0, len(reference.targets), 32)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = _preprocess(source, Path(tmp) / "prepared.onnx")
        ort_quantize_static(
            str(prepared),
            str(target),
            _Calibration("input", batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # UINT8 activations x INT8 weights (U8S8) is onnxruntime's fast CPU path, but on
            # x86 CPUs without VNNI its kernels can saturate: on the digits model that cost 55
            # accuracy points. 7-bit weights (reduce_range) avoid it at no measurable cost, and
            # keep a package quantized on a VNNI machine accurate on an AVX2 one. (Signed
            # activations also avoid it but ran no faster than fp32 on AVX2.)
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return {
        "method": "static QDQ, per-channel INT8 weights (7-bit range), UINT8 activations "
        "(MinMax calibration)",
        "calibration": {
            "data": f"{reference.source} ({reference.split} split)",
            "samples": len(reference.targets),
        },
    }


@QUANTIZERS.register("dynamic")
def quantize_dynamic(source: Path, target: Path, package: Package, **_: Any) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    # Measured on MiniLM (all-MiniLM-L6-v2) and the bundled industrial pairs, on an AVX-512
    # VNNI CPU: Spearman 0.8956 fp32 -> 0.8967 per-channel (lowest cosine to fp32 0.986);
    # on a graph prepared without symbolic shapes, per-channel 0.8950 (0.986), per-tensor
    # 0.8902 (0.926), per-channel with 7-bit weights (reduce_range) 0.8926 (0.972), MatMul
    # only with the embeddings left fp32 0.8969 (0.987) at 2.5x the size. Per-channel 8-bit
    # it is. CPUs without VNNI may saturate U8S8 products (see static above); the accuracy
    # gate measures on the machine that compresses.
    with tempfile.TemporaryDirectory() as tmp:
        prepared = _preprocess(source, Path(tmp) / "prepared.onnx")
        ort_quantize_dynamic(
            str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=True
        )
    return {"method": "dynamic, per-channel INT8 weights"}


@QUANTIZERS.register("fp16")
def convert_fp16(source: Path, target: Path, package: Package, **_: Any) -> dict[str, Any]:
    import onnx
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        # It warns once per weight too small for fp16; the accuracy gate measures the effect.
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    return {"method": "fp16 weights and activations, fp32 inputs and outputs"}


PRECISION = {"static": "int8", "dynamic": "int8", "fp16": "fp16"}


def _accuracy(model_path: Path, package: Package, reference: Any) -> tuple[float, np.ndarray]:
    """The task's monitored metric of an ONNX model on reference samples, and its outputs."""
    import onnxruntime as ort

    task = get_task(package.manifest.task)
    contract = task.bind(package.manifest.preprocessing, package.path)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    parts = []
    for start in range(0, len(reference.targets), 64):
        batch = task.collate(reference.inputs[start : start + 64], contract)
        # several named inputs (text: input_ids, attention_mask) go in by name
        parts.append(session.run(None, batch if isinstance(batch, dict) else {name: batch})[0])
    outputs = np.concatenate(parts)
    metrics = task.metrics(outputs, reference.targets, package.manifest.labels)
    return float(metrics[task.monitor]), outputs


def resolve_method(method: str | None, named_inputs: bool) -> str:
    """The quantization method for a package: static for one input tensor (images), dynamic
    for named inputs (text), where calibrating a static one over dicts makes no sense."""
    if method is None:
        return "dynamic" if named_inputs else "static"
    if named_inputs and method == "static":
        raise ConfigError(
            "Static INT8 calibrates one input tensor; this package takes named inputs (text). "
            "Use --method dynamic (the default for text) or --fp16."
        )
    return method


def compress(
    ref: str,
    *,
    method: str | None = None,
    calib: str | None = None,
    data: str | None = None,
    samples: int = 256,
    max_drop: float = 0.01,
    force: bool = False,
    name: str | None = None,
    store: Store | None = None,
) -> Package:
    """Compress package ref's fp32 ONNX export (method: static or dynamic INT8, or fp16; by
    default static for images, dynamic for text) and write it as a new version, unless the
    task's monitored metric (accuracy; Spearman for embeddings) on its validation data drops
    by more than max_drop (and force is off)."""
    store = store or Store()
    parent = store.open(ref)
    fp32 = parent.export_path("onnx")
    if fp32 is None:
        raise PackageError(
            f"{parent.ref} has no ONNX export to compress; make one with "
            f"`sampan export {parent.ref} --format onnx` and compress that."
        )
    if parent.manifest.exports["onnx"].get("precision") != "fp32":
        raise PackageError(
            f"{parent.ref} is already {parent.manifest.exports['onnx']['precision']}"
            "; compress its fp32 parent instead."
        )
    task = get_task(parent.manifest.task)
    named_inputs = isinstance(task.input_spec(parent.manifest.preprocessing), dict)
    method = resolve_method(method, named_inputs)
    quantizer = QUANTIZERS.get(method)
    precision = PRECISION.get(method, "int8")
    validation = reference_samples(parent, data, split="val")
    before, _ = _accuracy(fp32, parent, validation)
    entry: dict[str, Any] = {}
    after_metrics: dict[str, Any] = {}

    def write(folder: Path) -> None:
        copy_contract_files(parent, folder)
        target = folder / ONNX_FILE
        details = quantizer(fp32, target, parent, calib=calib, samples=samples)
        after, outputs = _accuracy(target, parent, validation)
        drop = before - after
        if drop > max_drop and not force:
            raise CompressionError(
                f"{precision.upper()} {task.monitor} {after:.4f} is {drop * 100:.2f} points "
                f"below fp32 {before:.4f} (allowed: {max_drop * 100:.2f}); nothing was written. "
                "Try more --samples, --method dynamic, or --force to keep it anyway."
            )
        after_metrics.update(task.metrics(outputs, validation.targets, parent.manifest.labels))
        entry.update(
            {
                "file": ONNX_FILE,
                "precision": precision,
                "opset": parent.manifest.exports["onnx"]["opset"],
                **details,
                f"{task.monitor}_before": before,
                f"{task.monitor}_after": after,
                "size_before_bytes": fp32.stat().st_size,
                "size_after_bytes": target.stat().st_size,
                "evaluated_on": validation.describe(),
            }
        )

    fields = derived_fields(
        parent, f"compress:{precision}-{method}" if precision != method else "compress:fp16"
    )
    fields["exports"] = {"onnx": entry}
    fields["metrics"] = after_metrics
    return store.write(name or parent.manifest.name, fields, write)
