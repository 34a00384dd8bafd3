"""Typed configs: nested dataclasses loaded from YAML with clear errors.

Every pipeline's settings are a dataclass tree with the paper's defaults; a YAML file
(or a built-in name) overrides any subset of fields. Unknown keys and wrong types are
errors that name the file and the dotted key, because a silently ignored typo in a
threshold ruins a dataset quietly.

Values are range-checked the same way, at load time: a config module declares its rules
once, beside its dataclasses,

    checks(SideFaceConfig, at_least(0, "alpha_min"), ordered("alpha_min", "alpha_max"),
           fraction("max_side_fraction"))

and every load (`load_config`, `from_dict`) applies them to each dataclass it builds, so
`alpha_min > alpha_max` or `crop.size: 0` is a ConfigError naming the file and the key
(`stc` exits 2) instead of a run that rejects every clip or fails on each one.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or mapping does not fit its dataclass."""


# --- range and relation rules ------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """`test(*values)` must hold for the values of `keys` (fields of one dataclass); `text`
    says what must hold, for the message. A None value (an optional field left unset) is
    not checked."""

    keys: tuple[str, ...]
    test: Callable[..., bool]
    text: str


_RULES: dict[type, tuple[Rule, ...]] = {}


def checks(cls: type[T], *rules: Rule | list[Rule]) -> type[T]:
    """Declare the rules of a config dataclass (added to any declared before)."""
    flat = [r for item in rules for r in (item if isinstance(item, list) else [item])]
    names = {f.name for f in dataclasses.fields(cls)}
    for r in flat:
        unknown = [k for k in r.keys if k not in names]
        if unknown:
            raise TypeError(f"rule on {cls.__name__} names unknown field(s) {unknown}")
    _RULES[cls] = _RULES.get(cls, ()) + tuple(flat)
    return cls


def _all(values: Any, test: Callable[[Any], bool]) -> bool:
    # A rule on a tuple, list or mapping field holds for each of its items (values).
    if isinstance(values, Mapping):
        values = list(values.values())
    if isinstance(values, (list, tuple)):
        return all(_all(v, test) for v in values)
    return test(values)


def _number_rule(keys: tuple[str, ...], test: Callable[[float], bool], text: str) -> list[Rule]:
    def check(v: Any) -> bool:
        return _all(v, lambda x: isinstance(x, (int, float)) and not math.isnan(x) and test(x))
    return [Rule((k,), check, text) for k in keys]


def positive(*keys: str) -> list[Rule]:
    return _number_rule(keys, lambda x: x > 0, "> 0")


def at_least(lo: float, *keys: str) -> list[Rule]:
    return _number_rule(keys, lambda x: x >= lo, f">= {lo:g}")


def in_range(lo: float, hi: float, *keys: str, open_high: bool = False) -> list[Rule]:
    """lo <= value <= hi (value < hi with `open_high`)."""
    if open_high:
        return _number_rule(keys, lambda x: lo <= x < hi, f"in [{lo:g}, {hi:g})")
    return _number_rule(keys, lambda x: lo <= x <= hi, f"in [{lo:g}, {hi:g}]")


def fraction(*keys: str) -> list[Rule]:
    """Probabilities and shares: in [0, 1]."""
    return in_range(0, 1, *keys)


def even(*keys: str) -> list[Rule]:
    """Frame sizes a yuv420p encode needs: even numbers."""
    return _number_rule(keys, lambda x: x % 2 == 0, "an even number")


def ordered(low: str, high: str, strict: bool = True) -> Rule:
    """The value of `low` below (`strict`) or at most the value of `high`."""
    op = "<" if strict else "<="
    return Rule((low, high), (lambda a, b: a < b) if strict else (lambda a, b: a <= b), op)


def increasing(*keys: str) -> list[Rule]:
    """[low, high] ranges: each a pair with low <= high."""
    def check(v: Any) -> bool:
        return len(v) == 2 and v[0] <= v[1]
    return [Rule((k,), check, "a range [low, high] with low <= high") for k in keys]


def check_config(obj: Any, where: str = "") -> None:
    """Apply the declared rules to `obj` and every dataclass inside it; ConfigError names
    the first dotted key that breaks one. Loaders call this; call it again after changing
    a loaded config in code."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        sub = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            check_config(value, sub)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    check_config(item, f"{sub}[{i}]")
    _check_own(obj, where)


def _check_own(obj: Any, where: str) -> None:
    for rule in _RULES.get(type(obj), ()):
        values = [getattr(obj, k) for k in rule.keys]
        if any(v is None for v in values):
            continue
        try:
            ok = bool(rule.test(*values))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            key, *others = (f"{where}.{k}" if where else k for k in rule.keys)
            against = "".join(f" {k} ({v!r})" for k, v in zip(others, values[1:]))
            raise ConfigError(f"{key}: {values[0]!r} must be {rule.text}{against}")


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
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc
    # Nested dataclasses were checked as they were built; their defaults are valid.
    _check_own(obj, where)
    return obj


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


BASE_KEY = "base"


def load_config(cls: type[T], name_or_file: str | Path | None = None,
                builtin_dir: Path | None = None, kind: str = "") -> T:
    """Load `cls` from a YAML file or built-in name; None gives the defaults.

    A file may start from another config with `base: NAME_OR_FILE` (a built-in name, or a
    YAML path relative to the file) and give only the keys it changes: mappings merge key by
    key, anything else (numbers, lists) replaces the base's value. Bases may chain.
    """
    if name_or_file is None:
        return cls()
    path = (resolve_config_path(name_or_file, builtin_dir, kind or cls.__name__)
            if builtin_dir is not None else Path(name_or_file))
    has_base_field = BASE_KEY in {f.name for f in dataclasses.fields(cls)}
    data = _read_with_base(path, builtin_dir, kind or cls.__name__, has_base_field, ())
    return from_dict(cls, data, source=str(path))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return dict(data)


def _read_with_base(path: Path, builtin_dir: Path | None, kind: str, has_base_field: bool,
                    chain: tuple[Path, ...]) -> dict[str, Any]:
    data = _read_yaml(path)
    if has_base_field or BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base: must name a built-in {kind} config or a YAML file, "
                          f"got {base!r}")
    looks_like_file = Path(base).suffix in (".yaml", ".yml") or "/" in base
    if looks_like_file or builtin_dir is None:
        base_path = Path(base).expanduser()
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        if not base_path.exists():
            hint = "" if builtin_dir is None else \
                f", nor a built-in name ({sorted(p.stem for p in builtin_dir.glob('*.yaml'))})"
            raise ConfigError(f"{path}: base: {base!r} is not a file{hint}")
    else:
        base_path = resolve_config_path(base, builtin_dir, kind)
    here = path.resolve()
    if base_path.resolve() in chain + (here,):
        names = " -> ".join(str(p) for p in chain + (here, base_path.resolve()))
        raise ConfigError(f"{path}: base: configs name each other in a loop ({names})")
    return merge(_read_with_base(base_path, builtin_dir, kind, has_base_field, chain + (here,)),
                 data)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merge key by key, other values replace."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) \
            else v
    return out


def parse_sets(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """`--set a.b=value` items -> [(["a", "b"], value)]; the value is read as YAML (`1e-3`
    and `0.5` are numbers, `[1, 2]` a list, `null` None)."""
    out = []
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.max_steps=100")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
        if isinstance(value, str):
            try:                      # YAML 1.1 reads 1e-3 as a string
                value = float(value) if any(c in value for c in ".eE") else value
            except ValueError:
                pass
        out.append(([k.strip() for k in key.split(".")], value))
    return out


def with_sets(cfg: T, items: list[str] | None, source: str = "--set") -> T:
    """A copy of config `cfg` with `--set a.b=value` overrides applied (list items by index:
    `steps.0.name=x`); unknown keys and wrong types are ConfigErrors naming the key, and the
    declared range rules are checked again."""
    sets = parse_sets(items)
    if not sets:
        return cfg
    data = to_dict(cfg)
    for keys, value in sets:
        node: Any = data
        dotted = ".".join(keys)
        for i, k in enumerate(keys):
            last = i == len(keys) - 1
            if isinstance(node, list):
                try:
                    idx = int(k)
                    node[idx]
                except (ValueError, IndexError):
                    raise ConfigError(f"{source} {dotted}: {k!r} is not an index of the "
                                      f"{len(node)}-item list there") from None
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if k not in node:
                    where = ".".join(keys[:i]) or "the top level"
                    raise ConfigError(f"{source} {dotted}: no key {k!r} in {where}; valid keys: "
                                      f"{sorted(node)}")
                if last:
                    node[k] = value
                else:
                    node = node[k]
            else:
                raise ConfigError(f"{source} {dotted}: {'.'.join(keys[:i])} is a value, "
                                  "not a mapping")
    return from_dict(type(cfg), data, source=source)


def save_config(obj: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
