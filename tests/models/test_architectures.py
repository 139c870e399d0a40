"""Contract tests: every registered preset builds, counts its parameters and runs forward."""

from pathlib import Path

import pytest
import torch

from sampan.errors import NotFoundError
from sampan.models import PRESETS, build_network, count_parameters, resolve_architecture
from sampan.models.base import load_pretrained_weights

# Per task: what its networks are built with, a batch, and the output shape expected.
TASK_CASES = {
    "image-classification": (
        {"num_classes": 4, "in_chans": 1, "input_size": [32, 32]},
        (2, 1, 32, 32),
        (2, 4),
    ),
    "ts-forecast": (
        {"window": 40, "horizon": 6, "channels": 3, "mean": [0.0] * 3, "std": [1.0] * 3},
        (2, 40, 3),
        (2, 6, 3),
    ),
    # (N, steps scored): every step (autoencoder) or the newest alone (residual); 45 steps
    # is no whole number of a convolutional encoder's strides
    "ts-anomaly": ({"window": 45, "channels": 3}, (2, 45, 3), None),
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_and_runs(preset: str):
    task = PRESETS.get(preset).task
    args, batch, shape = TASK_CASES[task]
    spec = resolve_architecture(preset, task)
    torch.manual_seed(0)
    network = build_network(spec, **args).eval()
    assert count_parameters(spec, **args) == sum(p.numel() for p in network.parameters())
    with torch.inference_mode():
        out = network(torch.randn(*batch))
    if shape is None:
        steps = args["window"]
        shape = (2, out.shape[1]) if out.shape[1:] in ((1,), (steps,)) else ("N", f"1 or {steps}")
    assert out.shape == shape and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "preset", [p for p in PRESETS if PRESETS.get(p).task in ("ts-forecast", "ts-anomaly")]
)
def test_series_networks_read_statistics_from_the_rows_after_the_window(preset: str):
    """Trained per series, a network takes each window's mean and std as two extra rows and
    answers exactly as the same weights with those statistics as buffers."""
    task = PRESETS.get(preset).task
    args, batch, _ = TASK_CASES[task]
    spec = resolve_architecture(preset, task)
    mean, std = [1.0, -2.0, 0.5], [2.0, 0.5, 3.0]
    torch.manual_seed(0)
    plain = build_network(spec, **{**args, "mean": mean, "std": std}).eval()
    series = build_network(spec, **{**args, "series_stats": True}).eval()
    series.load_state_dict(plain.state_dict(), strict=False)  # no mean/std buffers there
    x = torch.randn(*batch)
    rows = torch.tensor([mean, std]).expand(batch[0], 2, 3)
    with torch.inference_mode():
        assert torch.allclose(series(torch.cat([x, rows], dim=1)), plain(x), atol=1e-5)


def test_any_timm_name_works_and_unknown_names_suggest():
    spec = resolve_architecture("timm/resnet10t")
    assert spec.name == "timm" and spec.config["model_name"] == "resnet10t"
    with pytest.raises(NotFoundError, match="Did you mean: resnet18"):
        resolve_architecture("resnet81")


def test_pretrained_weights_from_safetensors_and_hf_folder(tmp_path: Path):
    from safetensors.torch import save_file

    spec = resolve_architecture("small_cnn_tiny")
    torch.manual_seed(1)
    source = build_network(spec, num_classes=10, in_chans=1)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors")
    )
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (tmp_path / "w.safetensors").rename(hf / "model.safetensors")
    torch.manual_seed(2)
    # Other head size and three input channels: the head stays new, the first conv is adapted.
    target = build_network(spec, num_classes=3, in_chans=3, pretrained=str(hf))
    src, dst = source.state_dict(), target.state_dict()
    assert torch.equal(src["features.2.0.weight"], dst["features.2.0.weight"])
    assert dst["head.weight"].shape == (3, 64)
    assert dst["features.0.0.weight"].shape[1] == 3
    with pytest.raises(NotFoundError, match="not found"):
        load_pretrained_weights(target, tmp_path / "none.safetensors")
