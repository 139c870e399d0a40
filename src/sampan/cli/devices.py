"""`sampan devices`: the hardware here and the backends that can use it."""

from __future__ import annotations

from rich.table import Table

from sampan.progress import console


def devices() -> None:
    """List CPUs (with ISA features), GPUs and vendor accelerators, and onnxruntime providers."""
    from sampan.devices import DEVICES, list_devices

    table = Table(title="Devices")
    for col in ("device", "name", "memory", "details"):
        table.add_column(col, overflow="fold")
    for info in list_devices():
        details = ", ".join(
            f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in info.details.items()
        )
        memory = f"{info.memory_gb} GiB" if info.memory_gb else "-"
        table.add_row(info.id, info.name, memory, details)
    console.print(table)
    try:
        import onnxruntime

        from sampan.runtime.backends.onnxruntime_backend import usable_providers

        listed = onnxruntime.get_available_providers()
        usable = usable_providers(listed)
        providers = ", ".join(
            p if p in usable else f"{p} (its libraries are missing: not used)" for p in listed
        )
        console.print(f"onnxruntime {onnxruntime.__version__} providers: {providers}")
    except ImportError:
        console.print("onnxruntime: not installed")
    console.print(f"Device kinds sampan knows: {', '.join(DEVICES)}")
