"""Strict loading of typed config dataclasses from YAML files and `--section.key value` overrides.

Unknown keys and values of the wrong type or outside a `Literal` are errors that name
the key and what was expected; nothing is forwarded as `**kwargs`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be turned into the typed config."""


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking every key and value."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"'{where or '<root>'}' must be a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in allowed:
            raise ConfigError(
                f"unknown config key '{path}'; the keys of '{where or '<root>'}' are: "
                + ", ".join(allowed)
            )
        kwargs[key] = coerce(value, hints[key], path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # a __post_init__ check or a missing required key
        raise ConfigError(f"'{where or '<root>'}': {e}") from e


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against type annotation `tp` (dataclass, Literal, list, dict, X | None, scalars)."""
    origin = typing.get_origin(tp)
    if tp is Any:  # checked later by its reader (e.g. an architecture's typed parameters)
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, path)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"'{path}' = {value!r} is not allowed; choose one of: "
                + ", ".join(repr(c) for c in choices)
            )
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if origin in (list, Sequence):
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"'{path}' must be a list, got {value!r}")
        return [coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        _, value_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{path}' must be a mapping, got {value!r}")
        return {str(k): coerce(v, value_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{path}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{path}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{path}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{path}' must be a string, got {value!r}")
        return value
    raise TypeError(f"config type {tp!r} of '{path}' is not supported by the loader")


def yaml_problem(path: Path, error: yaml.YAMLError | UnicodeDecodeError) -> str:
    """'FILE:LINE:COLUMN: not valid YAML (what the parser expected)', or the byte that is not
    UTF-8: PyYAML's own text names "<unicode string>", not the file."""
    if isinstance(error, UnicodeDecodeError):
        line = error.object[: error.start].count(b"\n") + 1
        column = error.start - error.object.rfind(b"\n", 0, error.start)
        byte = error.object[error.start]
        return f"{path}:{line}:{column}: not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8"
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    return f"{where}: not valid YAML ({problem}{', ' + context if context else ''})"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML config file into a dict (an empty file is an empty dict)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_bytes().decode()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(yaml_problem(path, e)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def parse_overrides(args: Sequence[str]) -> list[tuple[str, Any]]:
    """Parse `--a.b value` and `--a.b=value` pairs; values are read as YAML scalars or lists."""
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"expected an override like --model.num_students 4, got {arg!r}")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override {arg} has no value")
            key, raw = arg[2:], args[i + 1]
            i += 2
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--{key}: cannot read value {raw!r}: {e}") from e
        out.append((key, value))
    return out


def apply_override(data: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set `data[a][b] = value` for key 'a.b', creating sections as needed."""
    parts = dotted_key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--{dotted_key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (for the metrics JSON and YAML round trips)."""
    return dataclasses.asdict(cfg)
