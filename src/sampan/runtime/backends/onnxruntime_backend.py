"""The onnxruntime backend: the package's ONNX export on the best execution provider here.

Never imports torch: serving an ONNX package stays light.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import io
import os
import platform
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
    available = usable_providers(available)
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


def usable_providers(available: list[str]) -> list[str]:
    """available without the TensorRT provider when TensorRT's own libraries are missing:
    onnxruntime-gpu lists it whether or not TensorRT is installed, and asking for it then
    prints an 'EP Error' page and retries every session on the next provider."""
    if "TensorrtExecutionProvider" in available and not tensorrt_loadable():
        return [p for p in available if p != "TensorrtExecutionProvider"]
    return list(available)


def tensorrt_loadable() -> bool:
    if platform.system() != "Linux":
        return True  # onnxruntime reports a missing library itself; we warn after
    with contextlib.suppress(Exception):
        import tensorrt  # noqa: F401  (pip's tensorrt wheels load libnvinfer on import)

        return True
    for name in ("libnvinfer.so.10", "libnvinfer.so"):
        with contextlib.suppress(OSError):
            ctypes.CDLL(name)
            return True
    return False


def provider_entries(providers: list[str], device: str | None) -> list[Any]:
    """Providers as onnxruntime takes them, GPU ones pinned to the requested index."""
    from sampan.devices import parse_device

    index = None
    if device and device.lower() != "auto":
        _, index = parse_device(device.lower())
    if index is None:
        return list(providers)
    return [(p, {"device_id": index}) if p in GPU_PROVIDERS else p for p in providers]


GPU_PROVIDERS = frozenset(
    {
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "MIGraphXExecutionProvider",
        "ROCMExecutionProvider",
    }
)


def preload_cuda_libraries(ort: Any) -> None:
    """Load the CUDA and cuDNN libraries that pip's nvidia-* wheels hold (the ones torch uses)
    before a CUDA session starts. onnxruntime-gpu does not find them on its own unless torch
    was imported first, and this backend never imports torch."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is None:
        return
    # It reports what it cannot find with print(); a provider that then fails to start is
    # reported by us, once, in the warning below.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(OSError):
        preload()


# A lone-row session (see OnnxRuntimeBackend) holds the model a second time: over this size
# the memory matters more than a lone caller's fraction of a millisecond.
LONE_SESSION_MAX_BYTES = 256 * 2**20


def session_options(ort: Any, threads: int | None, spin: bool) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # provider fallbacks are reported by us, once
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(Backend):
    """spin: whether the intra-op threads busy-wait between and after runs. Worker threads
    that spin take the cores from a server's event loop and decoding threads; `sampan serve`
    turns spinning off unless told --spin.

    lone_spin (with spin off, on the CPU provider): one-row batches run on a second session
    whose threads do spin. Without spinning each operator of a run wakes the sleeping worker
    threads, which at batch 1 is a large part of the run (resnet18 at 64x64, 2 cores: 5.1 ms
    a call against 3.8 ms spinning); a server uses it for a lone caller and keeps the
    non-spinning session for batches of several rows, under load. It holds the model twice
    (resident memory 298 -> 394 MB for resnet18's 45 MB), so it is skipped for models over
    LONE_SESSION_MAX_BYTES and for one thread (no workers to wake)."""

    name = "onnxruntime"
    needs = "onnx export"

    def __init__(
        self,
        package: Package,
        device: str | None = None,
        threads: int | None = None,
        spin: bool = True,
        lone_spin: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(package, device)
        import onnxruntime as ort

        path = require_onnx(package)
        providers = choose_providers(device, ort.get_available_providers())
        if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(providers):
            preload_cuda_libraries(ort)
        try:
            self.session = ort.InferenceSession(
                str(path),
                session_options(ort, threads, spin),
                providers=provider_entries(providers, device),
            )
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
        self.lone_session: Any = None
        if (
            lone_spin
            and not spin
            and used[0] == "CPUExecutionProvider"
            and (threads or os.cpu_count() or 1) > 1  # one thread: no workers to wake
            and path.stat().st_size <= LONE_SESSION_MAX_BYTES
        ):
            self.lone_session = ort.InferenceSession(
                str(path), session_options(ort, threads, True), providers=used
            )

    @classmethod
    def can_run(cls, package: Package) -> bool:
        return (
            package.export_path("onnx") is not None
            and importlib.util.find_spec("onnxruntime") is not None
        )

    @property
    def device(self) -> str:
        return str(self._providers[0])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            feed = batch if isinstance(batch, dict) else {self._input: batch}
            session = self.session
            if self.lone_session is not None and len(next(iter(feed.values()))) == 1:
                session = self.lone_session
            outputs: np.ndarray = session.run(self._outputs, feed)[0]
            return outputs
        except Exception as exc:  # InvalidArgument and friends: report, never crash
            raise DataError(f"onnxruntime refused the batch: {exc}".replace("\n", " ")) from None
