"""Built-in backends; importing registers them (their heavy imports happen on first use)."""

from sampan.runtime.backends import (  # noqa: F401
    onnxruntime_backend,
    openvino_backend,
    torch_backend,
)
