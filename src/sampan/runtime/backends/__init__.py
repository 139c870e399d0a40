"""Built-in backends; importing registers them (their heavy imports happen on first use)."""

from sampan.runtime.backends import onnxruntime_backend, torch_backend  # noqa: F401
