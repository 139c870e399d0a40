"""The onnxruntime backend: the package's ONNX export on the best execution provider here.

Never imports torch: serving an ONNX package stays light.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import numpy as np

from sampan.errors import DataError, PackageError
from sampan.package import Package
from sampan.runtime.engine import BACKENDS, Backend, require_onnx

# Best first; 'auto' takes every one that is installed, the CPU last.
PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "MIGraphXExecutionProvider",
    "ROCMExecutionProvider",
    "OpenVINOExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)


def choose_providers(device: str | None, available: list[str]) -> list[str]:
    """Providers for a device request ('auto', 'cpu', 'cuda:0', ...), CPU always last."""
    device = (device or "auto").lower()
    if device == "auto":
        return [p for p in PREFERENCE if p in available]
    from sampan.devices import DEVICES, parse_device

    kind, _ = parse_device(device)
    wanted = list(DEVICES.get(kind).ort_providers)
    present = [p for p in wanted if p in available and p != "CPUExecutionProvider"]
    if wanted and not present and kind != "cpu":
        warnings.warn(
            f"onnxruntime here has no provider for {device!r} (wants "
            f"{' or '.join(wanted)}; has {', '.join(available)}); falling back to "
            "the CPU.",
            RuntimeWarning,
            stacklevel=3,
        )
    return [*present, "CPUExecutionProvider"]


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    needs = "onnx export"

    def __init__(
        self,
        package: Package,
        device: str | None = None,
        threads: int | None = None,
        spin: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(package, device)
        import onnxruntime as ort

        path = require_onnx(package)
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            session_options.intra_op_num_threads = threads
        session_options.log_severity_level = 3  # provider fallbacks are reported by us, once
        if not spin:
            # Worker threads that busy-wait after each run take the cores from a server's
            # event loop and decoding threads; a server turns spinning off.
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = choose_providers(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(path), session_options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for a bad model file
            raise PackageError(
                f"{path} is not a loadable ONNX model ({exc}); re-export it with "
                "`sampan export`.".replace("\n", " ")
            ) from None
        used = self.session.get_providers()
        if providers[0] not in used:
            warnings.warn(
                f"{providers[0]} could not start; running on {used[0]}.",
                RuntimeWarning,
                stacklevel=2,
            )
        self._providers = used
        self._input = self.session.get_inputs()[0].name
        self._outputs = [self.session.get_outputs()[0].name]

    @classmethod
    def can_run(cls, package: Package) -> bool:
        return (
            package.export_path("onnx") is not None
            and importlib.util.find_spec("onnxruntime") is not None
        )

    @property
    def device(self) -> str:
        return self._providers[0]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(self._outputs, {self._input: batch})[0]
        except Exception as exc:  # InvalidArgument and friends: report, never crash
            raise DataError(f"onnxruntime refused the batch: {exc}".replace("\n", " ")) from None
