from pathlib import Path

import pytest

from sampan.config import build_config, load_yaml
from sampan.errors import ConfigError
from sampan.training.config import TrainConfig


def test_flags_override_the_file(tmp_path: Path):
    path = tmp_path / "train.yaml"
    path.write_text("data: parts\nname: parts\nepochs: 7\nbatch-size: 16\n")
    config = build_config(TrainConfig, load_yaml(path), {"epochs": 3, "lr": None})
    assert (config.data, config.epochs, config.batch_size, config.lr) == ("parts", 3, 16, 2e-3)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, {"data": "d", "epochz": 3, "lr": "fast"}, {})
    message = str(info.value)
    assert "unknown option 'epochz'" in message and "Did you mean: epochs" in message
    assert "lr must be a number" in message and "name is required" in message


def test_values_are_range_checked():
    with pytest.raises(ConfigError, match="val_fraction must be between 0 and 1"):
        build_config(TrainConfig, {"data": "d", "name": "n", "val_fraction": 1.5}, {})
    with pytest.raises(ConfigError, match="input_size must be one positive side"):
        build_config(TrainConfig, {"data": "d", "name": "n", "input_size": 0}, {})
    with pytest.raises(ConfigError, match="augment must be one of"):
        build_config(TrainConfig, {"data": "d", "name": "n", "augment": "rotate"}, {})


def test_bad_yaml_is_a_config_error(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
