"""Configuration as dataclasses, loaded from YAML and overridable from the command line.

One config object travels through the code. Every config in the kit is a (nested) dataclass;
this module turns YAML mappings and ``key.sub=value`` overrides into those dataclasses,
checking names and types so that a typo stops with a message listing the valid keys instead of
being silently ignored.

A YAML file may start from another file of the same folder with a top-level
``inherit: <name>`` (``<name>.yaml``): the parent is loaded first (it may inherit in turn) and
the child's mappings are merged into it key by key, so a preset states only what differs
(``configs/presets/smoke.yaml`` inherits ``quick``).

Example::

    cfg = load_config(KitConfig, "configs/presets/quick.yaml", ["model.backbone.img_size=64"])
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

#: The repository's ``configs/`` folder (presets and settings).
CONFIG_DIR: Path = Path(__file__).resolve().parent.parent / "configs"
#: Top-level key of a YAML file naming the file it starts from.
INHERIT_KEY: str = "inherit"
#: Field metadata flag: :func:`to_dict` leaves the field out while it holds its default (a
#: field added after runs were keyed, e.g. ``data.dataset``: synthetic runs keep their keys).
OMIT_IF_DEFAULT: str = "omit_if_default"


class ConfigError(ValueError):
    """A config file or override does not fit the config's dataclasses."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a string override) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} does not fit {tp}: " + "; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, where): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys are an error listing valid ones."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys are {sorted(types_)}"
        )
    kwargs = {k: _convert(v, types_[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def to_dict(obj: Any, *, complete: bool = False) -> Any:
    """Dataclass (nested) -> plain dict/list structure suitable for YAML or JSON.

    A field declared with ``metadata={OMIT_IF_DEFAULT: True}`` is left out while it holds its
    default, so adding such a field changes neither the saved configs nor the run keys of the
    configs that do not use it; ``complete=True`` writes every field (for showing and
    overriding a config).
    """
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if not complete and f.metadata.get(OMIT_IF_DEFAULT) and value == _field_default(f):
                continue
            out[f.name] = to_dict(value, complete=complete)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, complete=complete) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, complete=complete) for k, v in obj.items()}
    return obj


def _parse_override_value(text: str) -> Any:
    """``"3"`` -> 3, ``"[1,2]"`` -> [1, 2], ``"null"`` -> None; plain words stay strings."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: T, overrides: list[str] | None) -> T:
    """Apply ``"a.b.c=value"`` overrides to a dataclass config, returning a new config."""
    if not overrides:
        return cfg
    data = to_dict(cfg, complete=True)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                valid = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(
                    f"override {key!r}: no key {'.'.join(parts[:depth + 1])!r}; valid keys here: {valid}"
                )
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            valid = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(f"override {key!r}: unknown key {parts[-1]!r}; valid keys here: {valid}")
        node[parts[-1]] = _parse_override_value(raw)
    return from_dict(type(cfg), data)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, updated by the YAML file at ``path``, then by ``overrides``."""
    cfg = cls()
    if path is not None:
        data = read_yaml(path)
        merged = _deep_merge(to_dict(cfg), data, str(path))
        cfg = from_dict(cls, merged, str(path))
    return apply_overrides(cfg, overrides)


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML mapping with its ``inherit:`` chain resolved (module docstring).

    Raises:
        ConfigError: a missing or invalid file, a parent that does not exist, or a cycle.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; the kit's configs live in {CONFIG_DIR}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    parent = data.pop(INHERIT_KEY, None)
    if parent is None:
        return data
    parent_path = path.parent / f"{parent}.yaml"
    if parent_path.resolve() in _seen or parent_path.resolve() == path.resolve():
        raise ConfigError(f"{path}: '{INHERIT_KEY}: {parent}' makes a cycle")
    base = read_yaml(parent_path, (*_seen, path.resolve()))
    return _deep_merge(base, data, str(path))


def _deep_merge(base: dict, update: dict, where: str) -> dict:
    if not isinstance(update, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v, f"{where}.{k}")
        else:
            out[k] = v
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as JSON (used next to checkpoints and results)."""
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
