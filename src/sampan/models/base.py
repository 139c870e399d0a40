"""Architecture and preset registries, and the factory that builds a network from a spec.

An architecture is a builder function ``(num_classes, in_chans, input_size, **config) ->
nn.Module``. A preset is a tiny function returning an ArchitectureSpec over a builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sampan.errors import ConfigError, NotFoundError, PackageError
from sampan.registry import Registry, suggest


@dataclass
class ArchitectureSpec:
    """Which builder to call and with what config (num_classes etc. added at build time)."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    task: str = "image-classification"


@dataclass
class Preset:
    name: str
    task: str
    make: Callable[[], ArchitectureSpec]
    description: str


ARCHITECTURES: Registry[Callable[..., Any]] = Registry("architecture")
PRESETS: Registry[Preset] = Registry("architecture preset")


def register_preset(task: str) -> Callable[[Callable[[], ArchitectureSpec]], Callable[[], Any]]:
    """Register a preset function; its name is the preset name, its docstring the summary."""

    def decorator(fn: Callable[[], ArchitectureSpec]) -> Callable[[], ArchitectureSpec]:
        doc = (fn.__doc__ or "").strip().splitlines()
        PRESETS.add(fn.__name__, Preset(fn.__name__, task, fn, doc[0] if doc else ""))
        return fn

    return decorator


def _load_library() -> None:
    import sampan.models  # noqa: F401  (registers the built-in architectures and presets)


def resolve_architecture(name: str, task: str = "image-classification") -> ArchitectureSpec:
    """A preset name, or any timm model name (optionally 'timm/NAME'), as a spec."""
    _load_library()
    if name in PRESETS:
        preset = PRESETS.get(name)
        if preset.task != task:
            raise ConfigError(f"Preset {name!r} is for {preset.task}, not {task}.")
        spec = preset.make()
        spec.preset = name
        spec.task = task
        return spec
    timm_name = name.removeprefix("timm/")
    if task == "image-classification":
        import timm

        if timm.is_model(timm_name):
            return ArchitectureSpec("timm", {"model_name": timm_name}, preset=None, task=task)
        choices = list(PRESETS) + timm.list_models()
    else:
        choices = list(PRESETS)
    raise NotFoundError(
        f"Unknown architecture {name!r}.{suggest(name, choices)} "
        "Run `sampan models` for the presets; any timm model name also works."
    )


def build_network(spec: ArchitectureSpec, **build_args: Any) -> Any:
    """Instantiate the network of a spec with its config plus build_args."""
    _load_library()
    builder = ARCHITECTURES.get(spec.name)
    return builder(**{**spec.config, **build_args})


def count_parameters(spec: ArchitectureSpec, **build_args: Any) -> int:
    """Parameter count, built on the meta device so no memory is allocated."""
    import torch

    with torch.device("meta"):
        network = build_network(spec, **{**build_args, "pretrained": None})
    return sum(p.numel() for p in network.parameters())


def adapt_channels(weight: Any, channels: int) -> Any:
    """A conv weight (O, I, k, k) for another input channel count, keeping the response scale.

    Our own because timm's adapt_input_conv assumes an RGB source, and we also adapt
    grayscale weights to colour input.
    """
    source = weight.shape[1]
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-channels // source)
    return weight.repeat(1, repeats, 1, 1)[:, :channels] * (source / channels)


def classifier_keys(network: Any) -> set[str]:
    """State-dict keys of the classifier head (timm's get_classifier, or ours)."""
    get = getattr(network, "get_classifier", None)
    head = get() if get is not None else None
    if head is None:
        return set()
    ids = {id(t) for t in head.state_dict(keep_vars=True).values()}
    return {k for k, t in network.state_dict(keep_vars=True).items() if id(t) in ids}


def load_pretrained_weights(
    network: Any, source: str | Path, skip_head: bool = False
) -> dict[str, int]:
    """Load a safetensors file or a Hugging Face-format directory into network.

    Tensors whose shape differs (a new classifier head) are left as initialised; a first
    convolution with another channel count is adapted by adapt_channels.
    """
    import torch
    from safetensors.torch import load_file

    path = Path(source)
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "weights.safetensors"]
        path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise NotFoundError(
            f"Pretrained weights {source} not found: give a .safetensors file "
            "or a folder holding model.safetensors."
        )
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise PackageError(f"{path} is not a readable safetensors file: {exc}") from None
    own = network.state_dict()
    prefix = getattr(network, "state_prefix", "")
    if prefix:
        # A bare encoder's weights (a Hugging Face directory) for a network holding it under
        # `prefix`; a task head's wrapper name (`bert.`) is dropped when that is what fits.
        # Taken only when more names fit that way (a package's own weights already do).
        mapped = {
            (prefix + key if prefix + key in own else prefix + key.partition(".")[2]): tensor
            for key, tensor in state.items()
        }
        if sum(k in own for k in mapped) > sum(k in own for k in state):
            state = mapped
    head = classifier_keys(network) if skip_head else set()
    loaded, skipped = {}, 0
    for key, tensor in state.items():
        target = own.get(key)
        if target is None or key in head:
            skipped += 1
            continue
        if tensor.shape != target.shape:
            same_kernel = (
                tensor.shape[0] == target.shape[0] and tensor.shape[2:] == target.shape[2:]
            )
            if tensor.ndim == 4 and same_kernel:
                tensor = adapt_channels(tensor, target.shape[1])
            else:
                skipped += 1
                continue
        loaded[key] = tensor.to(dtype=target.dtype)
    if not loaded:
        raise PackageError(
            f"No tensor in {path} matches this architecture; check the "
            "weights belong to the same model."
        )
    with torch.no_grad():
        network.load_state_dict(loaded, strict=False)
    return {"loaded": len(loaded), "skipped": skipped, "kept_initialised": len(own) - len(loaded)}
