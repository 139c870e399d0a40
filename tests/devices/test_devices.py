import warnings

import numpy as np
import pytest

import sampan
from sampan.devices import DEVICES, PluginDeviceKind, list_devices, resolve_device
from sampan.devices.base import DeviceInfo
from sampan.devices.cpu import cpu_features
from sampan.errors import NotFoundError
from sampan.store import Store


def test_the_cpu_is_always_listed_last():
    found = list_devices()
    assert found[-1].kind == "cpu" and found[-1].details["cores"] >= 1


def test_cpu_features_are_parsed():
    text = "model name\t: Test CPU\nflags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni amx_tile\n"
    assert cpu_features(text) == ("Test CPU", ["SSE4.2", "AVX2", "AVX-512F", "AVX-512 VNNI", "AMX"])


def test_missing_device_falls_back_to_cpu_with_a_warning():
    with pytest.warns(RuntimeWarning, match="'npu:0' is not available here"):
        assert str(resolve_device("npu:0")) == "cpu"
    with pytest.raises(NotFoundError, match=r"known kinds: .*cuda"):
        resolve_device("tpu")


class FakeNPU(PluginDeviceKind):
    """A vendor plugin that is 'installed': it runs on the CPU underneath."""

    name = "fakenpu"
    torch_type = "cpu"
    priority = 60

    def detect(self) -> list[DeviceInfo]:
        return [DeviceInfo("fakenpu", 0, "Fake NPU 910")]

    def torch_device(self, index):
        import torch

        return torch.device("cpu")


def test_a_registered_plugin_device_runs_a_package(trained, digits_holdout):
    DEVICES.add("fakenpu", FakeNPU)
    try:
        assert any(d.id == "fakenpu:0" for d in list_devices())
        home, ref = trained
        files = sorted(digits_holdout.glob("*/*.png"))[:5]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # present: no fallback warning
            on_plugin = sampan.load(ref, backend="torch", device="fakenpu:0", store=Store(home))
        on_cpu = sampan.load(ref, backend="torch", device="cpu", store=Store(home))
        assert np.array_equal(on_plugin.outputs(files), on_cpu.outputs(files))
        assert str(resolve_device("auto")) == "cpu"  # the fake outranks the CPU, maps to it
    finally:
        DEVICES.remove("fakenpu")


GPU_LISTING = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("loadable", [True, False])
def test_onnxruntime_providers_follow_the_hardware(monkeypatch, loadable):
    from sampan.runtime.backends import onnxruntime_backend as ortb

    monkeypatch.setattr(ortb, "tensorrt_loadable", lambda: loadable)
    # onnxruntime-gpu lists TensorRT even where its libraries are missing: it is used only
    # when they load, and CUDA then comes first.
    expected = GPU_LISTING if loadable else GPU_LISTING[1:]
    assert ortb.choose_providers("auto", GPU_LISTING) == expected
    assert ortb.choose_providers("cuda", GPU_LISTING) == expected
    assert ortb.choose_providers("cpu", GPU_LISTING) == ["CPUExecutionProvider"]
    # A GPU index reaches the provider; the CPU takes no options.
    assert ortb.provider_entries(expected, "cuda:1")[-2:] == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert ortb.provider_entries(expected, "auto") == expected


def test_missing_onnxruntime_provider_falls_back_to_cpu_with_a_warning(monkeypatch):
    from sampan.runtime.backends import onnxruntime_backend as ortb

    monkeypatch.setattr(ortb, "tensorrt_loadable", lambda: False)
    with pytest.warns(RuntimeWarning, match=r"no provider for 'cuda'.*falling back to the CPU"):
        assert ortb.choose_providers("cuda", GPU_LISTING[::2]) == ["CPUExecutionProvider"]
