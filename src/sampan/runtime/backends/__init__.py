"""Built-in backends; importing registers them."""

from sampan.runtime.backends import torch_backend  # noqa: F401
