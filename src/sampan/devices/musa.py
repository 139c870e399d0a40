"""Moore Threads GPUs through the torch_musa plugin."""

from sampan.devices.base import DEVICES, PluginDeviceKind


@DEVICES.register("musa")
class MooreThreadsMUSA(PluginDeviceKind):
    name = "musa"
    description = "Moore Threads GPUs (torch_musa)"
    priority = 70
    torch_type = "musa"
    plugin = "torch_musa"
