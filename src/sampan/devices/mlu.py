"""Cambricon MLUs through the torch_mlu plugin."""

from sampan.devices.base import DEVICES, PluginDeviceKind


@DEVICES.register("mlu")
class CambriconMLU(PluginDeviceKind):
    name = "mlu"
    description = "Cambricon MLUs (torch_mlu)"
    priority = 70
    torch_type = "mlu"
    plugin = "torch_mlu"
