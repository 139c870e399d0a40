"""Huawei Ascend NPUs through the torch_npu plugin."""

from sampan.devices.base import DEVICES, PluginDeviceKind


@DEVICES.register("npu")
class AscendNPU(PluginDeviceKind):
    name = "npu"
    description = "Huawei Ascend NPUs (torch_npu)"
    priority = 70
    torch_type = "npu"
    plugin = "torch_npu"
    ort_providers = ("CANNExecutionProvider",)
