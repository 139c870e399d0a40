"""Typed configs from YAML files and flags: flags override the file, all problems at once."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from sampan.errors import ConfigError
from sampan.registry import suggest

C = TypeVar("C")


def load_yaml(path: Path | str, option_keys: bool = True) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a ConfigError. option_keys: its
    keys are option names, "-" read as "_" (False: keys kept as written, e.g. model names)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"Config file {path} is not valid YAML: {exc}".replace("\n", " ")
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of option: value.")
    return {(str(k).replace("-", "_") if option_keys else str(k)): v for k, v in data.items()}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Coerce a YAML/flag value to the field's annotated type, or raise ValueError."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, arg)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{name} must be one of {', '.join(map(str, args))}, not {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, not {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(name, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, not {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, not {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, not {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, Path)):
            raise ValueError(f"{name} must be a string, not {value!r}")
        return str(value)
    if hint is dict or typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping, not {value!r}")
        return value
    return value


def build_config(cls: type[C], file_values: dict[str, Any], overrides: dict[str, Any]) -> C:
    """Build dataclass cls from a config file's values and flag overrides (None = not given)."""
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    merged = dict(file_values)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    problems = []
    values: dict[str, Any] = {}
    for key, value in merged.items():
        if key not in fields:
            problems.append(f"unknown option {key!r}.{suggest(key, list(fields))}")
            continue
        try:
            values[key] = _coerce(key, value, hints[key])
        except ValueError as exc:
            problems.append(str(exc))
    for name, f in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and name not in values:
            problems.append(f"{name} is required")
    if problems:
        raise ConfigError("Invalid configuration: " + "; ".join(problems) + ".")
    config = cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config
