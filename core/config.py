"""Typed configs: nested dataclasses loaded from YAML with clear errors.

Every pipeline's settings are a dataclass tree with the paper's defaults; a YAML file
(or a built-in name) overrides any subset of fields. Unknown keys and wrong types are
errors that name the file and the dotted key, because a silently ignored typo in a
threshold ruins a dataset quietly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or mapping does not fit its dataclass."""


def _convert(value: Any, tp: Any, where: str) -> Any:
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
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {k: _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        return Path(value)
    return value


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys of {cls.__name__}: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def from_dict(cls: type[T], data: Mapping[str, Any] | None, source: str = "") -> T:
    """Build `cls` from a (partial) mapping; missing fields keep their defaults."""
    try:
        return _build(cls, data or {}, "")
    except ConfigError as exc:
        prefix = f"{source}: " if source else ""
        raise ConfigError(f"{prefix}{exc}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain, YAML-safe dict of a config dataclass (Paths become strings)."""

    def clean(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return clean(dataclasses.asdict(obj))


def resolve_config_path(name_or_file: str | Path, builtin_dir: Path, kind: str) -> Path:
    """A YAML path as given, or a built-in config by name (`stage1` -> stage1.yaml)."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"{kind} config file {path} does not exist")
        return path
    candidate = builtin_dir / f"{name_or_file}.yaml"
    if candidate.exists():
        return candidate
    names = sorted(p.stem for p in builtin_dir.glob("*.yaml"))
    raise ConfigError(
        f"no {kind} config named {name_or_file!r}; built-in names: {names}, or give a .yaml path"
    )


def load_config(cls: type[T], name_or_file: str | Path | None = None,
                builtin_dir: Path | None = None, kind: str = "") -> T:
    """Load `cls` from a YAML file or built-in name; None gives the defaults."""
    if name_or_file is None:
        return cls()
    path = (resolve_config_path(name_or_file, builtin_dir, kind or cls.__name__)
            if builtin_dir is not None else Path(name_or_file))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_dict(cls, data, source=str(path))


def save_config(obj: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
