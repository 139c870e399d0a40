"""The OpenVINO backend (optional extra `sampan[openvino]`): the package's ONNX export compiled
for Intel CPUs, GPUs and NPUs (it also runs on other x86 CPUs). Never imports torch."""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import numpy as np

from sampan.errors import DataError, PackageError
from sampan.package import Package
from sampan.runtime.engine import BACKENDS, Backend, require_onnx

# sampan device kind -> OpenVINO device name
DEVICE_NAMES = {"cpu": "CPU", "xpu": "GPU", "npu": "NPU"}


def choose_device(requested: str | None, available: list[str]) -> str:
    requested = (requested or "auto").lower()
    if requested == "auto":
        return next((d for d in ("GPU", "CPU") if d in available), "CPU")
    kind, _, index = requested.partition(":")
    name = DEVICE_NAMES.get(kind)
    wanted = f"{name}.{index}" if name and index and name != "CPU" else name
    if wanted in available or (wanted and any(d.startswith(wanted) for d in available)):
        return str(wanted)
    warnings.warn(
        f"OpenVINO here has no device for {requested!r} (has {', '.join(available)});"
        " falling back to the CPU.",
        RuntimeWarning,
        stacklevel=3,
    )
    return "CPU"


@BACKENDS.register("openvino")
class OpenVINOBackend(Backend):
    name = "openvino"
    needs = "onnx export"

    def __init__(
        self,
        package: Package,
        device: str | None = None,
        threads: int | None = None,
        precision: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(package, device)
        import openvino as ov

        path = require_onnx(package)
        core = ov.Core()
        self._device = choose_device(device, core.available_devices)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        # OpenVINO quietly runs fp32 models in bf16 on CPUs that have AVX-512 BF16 or AMX
        # (logits then differ from fp32 by ~1e-2). An fp32 or INT8 package keeps fp32 math
        # unless the caller asks for precision='bf16' or 'f16'; an fp16 package is left to
        # the device's own choice.
        exported = package.manifest.exports.get("onnx", {}).get("precision")
        if precision is None and exported != "fp16":
            precision = "f32"
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads and self._device == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core.compile_model(core.read_model(str(path)), self._device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for bad models
            raise PackageError(
                f"OpenVINO cannot load {path} ({str(exc).splitlines()[0]}); "
                "re-export it with `sampan export`."
            ) from None
        self._request = self.compiled.create_infer_request()
        self._output = self.compiled.output(0)

    @classmethod
    def can_run(cls, package: Package) -> bool:
        return (
            package.export_path("onnx") is not None
            and importlib.util.find_spec("openvino") is not None
        )

    @property
    def device(self) -> str:
        return f"openvino:{self._device}"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            feed = batch if isinstance(batch, dict) else [batch]
            return np.array(self._request.infer(feed)[self._output], copy=True)
        except Exception as exc:  # shape errors and friends: report, never crash
            raise DataError(f"OpenVINO refused the batch: {exc}".splitlines()[0]) from None
