"""`--help` of the config: every section and key with its type, default and the first sentence
of the field's docstring (read from the source, where dataclass fields keep their docs)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
import textwrap
import types
import typing
from typing import Any, Literal, Union

WIDTH = 100


def field_docs(cls: type) -> dict[str, str]:
    """{field: its docstring} for the string literals that follow a field in `cls`'s source."""
    try:
        tree = ast.parse(inspect.getsource(sys.modules[cls.__module__]))
    except (OSError, TypeError, KeyError):  # no source (e.g. a frozen install): no docs
        return {}
    node = next(
        (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__), None
    )
    docs: dict[str, str] = {}
    body = node.body if node is not None else []
    for stmt, after in zip(body, body[1:]):
        is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and is_doc:
            docs[stmt.target.id] = " ".join(str(after.value.value).split())
    return docs


def first_sentence(text: str) -> str:
    """Up to the first '. ' that ends a sentence (the whole text if none does)."""
    end = text.replace("e.g. ", "e.g.,").replace("i.e. ", "i.e.,").find(". ")
    return text if end < 0 else text[: end + 1]


def type_name(tp: Any) -> str:
    """A type as a user writes its value: {a|b} for choices, null for None."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "{" + "|".join(str(c) for c in typing.get_args(tp)) + "}"
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    """A default as YAML writes it (true, null, [1, 2])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def section_class(tp: Any) -> type | None:
    """The config dataclass a field holds (directly, optionally, or as list items), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        found = section_class(arg)
        if found is not None:
            return found
    return None


def describe(cls: type, prefix: str, seen: dict[type, str]) -> list[str]:
    """The help lines of dataclass `cls` whose keys are written `--{prefix}key`; `seen` maps the
    sections already described to their keys (a second field of such a type refers to them)."""
    lines: list[str] = []
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    nested = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        section = section_class(tp)
        if section is not None and section not in seen:
            nested.append((f, tp, section))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        shown = yaml_value(default)
        if section is not None:
            shown += f" (the keys of {seen[section]})"
        dash = "" if "[]" in prefix else "--"  # a list item's keys are set in its YAML list
        lines.append(f"  {dash}{prefix}{f.name}  {type_name(tp)} = {shown}")
        if f.name in docs:
            lines += textwrap.wrap(
                first_sentence(docs[f.name]),
                WIDTH,
                initial_indent=" " * 6,
                subsequent_indent=" " * 6,
            )
    for f, tp, section in nested:
        list_items = typing.get_origin(tp) is list or any(
            typing.get_origin(a) is list for a in typing.get_args(tp)
        )
        key = f"{prefix}{f.name}" + ("[]" if list_items else "")
        seen[section] = key
        doc = first_sentence(docs.get(f.name) or " ".join((section.__doc__ or "").split()))
        if list_items:
            doc += f" A YAML list: --{prefix}{f.name} '[{{key: value, ...}}, ...]' of these keys."
        lines += ["", *textwrap.wrap(f"{key} ({type_name(tp)}): {doc}", WIDTH)]
        lines += describe(section, f"{key}.", seen)
    return lines


def config_help(cls: type) -> str:
    """Every section and key of config dataclass `cls` (e.g. ExperimentConfig), one block per
    section: `--section.key  type = default` and the first sentence of the field's docs."""
    return "\n".join(describe(cls, "", {cls: "<root>"})).strip("\n")
