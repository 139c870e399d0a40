"""ONNX export with a dynamic batch axis and a parity report on real samples."""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from sampan.errors import ExportError
from sampan.export.base import EXPORTERS
from sampan.package import Package
from sampan.runtime.reference import reference_samples
from sampan.tasks.base import get_task

ONNX_FILE = "model.onnx"
DEFAULT_OPSET = 18
TINY = 1e-6  # a row whose outputs are all smaller is held to this scale instead


def _torch_export(network: Any, example: Any, path: Path, opset: int) -> str:
    """Export with torch's dynamo exporter; fall back to the TorchScript one. Returns which."""
    import torch

    errors = []
    for exporter in ("dynamo", "torchscript"):
        try:
            with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                if exporter == "dynamo":
                    batch = torch.export.Dim("batch", min=1)
                    program = torch.onnx.export(
                        network,
                        (example,),
                        dynamo=True,
                        opset_version=opset,
                        input_names=["input"],
                        output_names=["output"],
                        dynamic_shapes=({0: batch},),
                        verbose=False,
                    )
                    if program is None:  # torch returns None only without dynamo
                        raise RuntimeError("the dynamo exporter returned no program")
                    program.save(str(path))
                else:
                    torch.onnx.export(
                        network,
                        (example,),
                        str(path),
                        dynamo=False,
                        opset_version=min(opset, 17),
                        input_names=["input"],
                        output_names=["output"],
                        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                    )
            return exporter
        except Exception as exc:  # exporters raise many types; report all reasons at the end
            errors.append(f"{exporter}: {str(exc).splitlines()[0][:300]}")
            path.unlink(missing_ok=True)
    raise ExportError(
        "ONNX export failed (" + "; ".join(errors) + "). An operator of this "
        "architecture may not be exportable; try another opset with --opset."
    )


def max_relative_diff(expected: np.ndarray, got: np.ndarray) -> float:
    """The largest difference of any row (sample) relative to that row's largest output:
    max over rows of max|got - expected| / max(max|expected|, TINY). Per row, so in a batch
    of series near 10,000 and near 0.5 the small series is held to its own scale."""
    if len(expected) == 0:
        return 0.0
    rows = len(expected)
    diff = np.abs(got.astype(np.float64) - expected).reshape(rows, -1).max(axis=1)
    scale = np.abs(expected.astype(np.float64)).reshape(rows, -1).max(axis=1)
    return float(np.max(diff / np.maximum(scale, TINY)))


def parity(torch_out: np.ndarray, onnx_out: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """How closely two sets of logits agree, and each one's accuracy; for outputs that are
    not class scores (a forecast), how closely they agree alone, relative to each sample's
    own outputs (max_relative_diff)."""
    if torch_out.ndim != 2 or targets.ndim != 1:
        return {
            "samples": len(targets),
            "max_abs_diff": float(np.max(np.abs(torch_out - onnx_out))),
            # readings in their own units (thousands of MW, say): checked relative to them
            "max_rel_diff": max_relative_diff(torch_out, onnx_out),
            "top1_agreement": 1.0,  # no classes: the difference is the whole check
        }
    return {
        "samples": len(targets),
        "max_abs_diff": float(np.max(np.abs(torch_out - onnx_out))),
        "top1_agreement": float(np.mean(torch_out.argmax(1) == onnx_out.argmax(1))),
        "accuracy_torch": float(np.mean(torch_out.argmax(1) == targets)),
        "accuracy_onnx": float(np.mean(onnx_out.argmax(1) == targets)),
    }


@EXPORTERS.register("onnx")
def export_onnx(
    package: Package,
    folder: Path,
    opset: int = DEFAULT_OPSET,
    data: str | None = None,
    atol: float = 1e-3,
    min_agreement: float = 0.99,
    samples: int = 256,
) -> dict[str, Any]:
    """Write folder/model.onnx; raise ExportError unless it matches torch on real samples."""
    import onnxruntime as ort
    import torch

    from sampan.runtime.backends.torch_backend import build_from_package

    task = get_task(package.manifest.task)
    contract = package.manifest.preprocessing
    if isinstance(task.input_spec(contract), dict):
        return _export_named(package, folder, opset, atol)
    reference = reference_samples(package, data, split="val", limit=samples)
    batch = task.collate(reference.inputs, contract)
    network = build_from_package(package)
    path = folder / ONNX_FILE
    exporter = _torch_export(network, torch.from_numpy(batch[:2]), path, opset)
    with torch.inference_mode():
        expected = network(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: batch})[0]
    report = parity(expected, got, reference.targets)
    difference = report.get("max_rel_diff", report["max_abs_diff"])
    if difference > atol or report["top1_agreement"] < min_agreement:
        raise ExportError(
            f"ONNX output differs from torch on {report['samples']} real samples: max "
            f"{'per-sample relative' if 'max_rel_diff' in report else 'abs'} diff {difference:.2e} "
            f"(tolerance {atol:.0e}), top-1 agreement "
            f"{report['top1_agreement']:.3f} (needs {min_agreement}). Nothing was written."
        )
    return {
        "file": ONNX_FILE,
        "opset": opset,
        "exporter": exporter,
        "precision": "fp32",
        "dynamic_axes": {"input": ["batch"], "output": ["batch"]},
        "parity": {
            **report,
            "data": f"{reference.source} ({reference.split} split)",
            "tolerance_abs": atol,
        },
    }


def _export_named(package: Package, folder: Path, opset: int, atol: float) -> dict[str, Any]:
    """Export a network of several named inputs with dynamic batch and sequence axes (text),
    checked against torch on the task's own parity inputs."""
    import onnxruntime as ort
    import torch

    from sampan.runtime.backends.torch_backend import build_from_package

    task = get_task(package.manifest.task)
    contract = task.bind(package.manifest.preprocessing, package.path)
    examples = getattr(task, "parity_inputs", None)
    if examples is None:
        raise ExportError(f"The {task.name} task gives no inputs to check an export with.")
    batch = task.collate([task.decode(x, contract) for x in examples()], contract)
    if not isinstance(batch, dict):
        raise ExportError(f"The {task.name} task's collate gave no named inputs to export.")
    names = list(batch)
    network = build_from_package(package)
    path = folder / ONNX_FILE
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            # The TorchScript exporter: transformer encoders trace cleanly through it, with
            # the sequence axis left dynamic.
            torch.onnx.export(
                network,
                tuple(torch.from_numpy(batch[n][:2]) for n in names),
                str(path),
                dynamo=False,
                opset_version=min(opset, 17),
                input_names=names,
                output_names=["output"],
                dynamic_axes={**axes, "output": {0: "batch"}},
            )
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise ExportError(f"ONNX export failed ({str(exc).splitlines()[0][:300]}).") from None
    with torch.inference_mode():
        expected = network(**{n: torch.from_numpy(v) for n, v in batch.items()}).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, batch)[0]
    cosine = (expected * got).sum(1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1)
    )
    report: dict[str, Any] = {
        "samples": len(expected),
        "max_abs_diff": float(np.max(np.abs(expected - got))),
        "min_cosine": float(cosine.min()),
        "data": f"the {task.name} task's {len(expected)} parity texts",
        "tolerance_abs": atol,
    }
    if report["max_abs_diff"] > atol:
        path.unlink(missing_ok=True)
        raise ExportError(
            f"ONNX output differs from torch by {report['max_abs_diff']:.2e} (tolerance "
            f"{atol:.0e}) on {report['samples']} texts. Nothing was written."
        )
    return {
        "file": ONNX_FILE,
        "opset": min(opset, 17),
        "exporter": "torchscript",
        "precision": "fp32",
        "dynamic_axes": {**{n: ["batch", "sequence"] for n in names}, "output": ["batch"]},
        "parity": report,
    }
