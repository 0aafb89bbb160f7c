"""What a CTR dataset holds: categorical (sparse) fields, numeric (dense) fields, a label, a group key.

A dataset directory carries its schema as `schema.json` beside `train/`, `valid/`, `test/`.
Sparse ids are integers in [0, vocab_size); a multi-valued field is a Parquet list column.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa

SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Input data that does not match what the schema or reader expects."""


@dataclass(frozen=True, slots=True)
class SparseField:
    """A categorical field: one id per row, or a bag of ids if `multi_valued`."""

    name: str
    vocab_size: int
    multi_valued: bool = False
    pooling: Literal["sum", "mean"] = "sum"


@dataclass(frozen=True, slots=True)
class DenseField:
    """A numeric field, fed to the towers as a float."""

    name: str


@dataclass(frozen=True, slots=True)
class Schema:
    """The columns of a CTR dataset; `group` names the column used for gAUC (e.g. user id)."""

    sparse: tuple[SparseField, ...]
    dense: tuple[DenseField, ...] = ()
    label: str = "label"
    group: str | None = None
    extra: dict = field(default_factory=dict, compare=False)
    """Free-form facts about the data (e.g. the synthetic generator's Bayes-optimal AUC)."""

    def __post_init__(self) -> None:
        names = [f.name for f in self.sparse] + [f.name for f in self.dense] + [self.label]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise DataError(f"schema: column names must be unique, repeated: {sorted(dupes)}")
        if not self.sparse:
            raise DataError("schema: at least one sparse field is needed")
        for f in self.sparse:
            if f.vocab_size < 1:
                raise DataError(
                    f"schema: sparse field '{f.name}' needs vocab_size >= 1, got {f.vocab_size}"
                )
            if "@" in f.name:
                raise DataError(
                    f"schema: field name '{f.name}' may not contain '@' (TorchRec uses it in keys)"
                )

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.dense]

    def columns(self, with_label: bool = True) -> list[str]:
        """Every column the reader needs, in a fixed order."""
        cols = self.sparse_names + self.dense_names + ([self.label] if with_label else [])
        if self.group is not None and self.group not in cols:
            cols.append(self.group)
        return cols

    def arrow_schema(self) -> pa.Schema:
        """The Parquet layout writers produce (readers also accept narrower ints and floats)."""
        fields = [
            pa.field(f.name, pa.list_(pa.int64()) if f.multi_valued else pa.int64())
            for f in self.sparse
        ]
        fields += [pa.field(f.name, pa.float32()) for f in self.dense]
        fields.append(pa.field(self.label, pa.float32()))
        if self.group is not None and self.group not in {f.name for f in fields}:
            fields.append(pa.field(self.group, pa.int64()))
        return pa.schema(fields)

    def check_file(self, path: str | Path, file_schema: pa.Schema, with_label: bool = True) -> None:
        """Raise DataError naming the file and column if `file_schema` cannot be read with this schema."""
        have = {f.name: f.type for f in file_schema}
        for f in self.sparse:
            _require(
                path,
                have,
                f.name,
                _is_id_list if f.multi_valued else _is_int,
                "a list of integer ids" if f.multi_valued else "an integer id column",
            )
        for f in self.dense:
            _require(path, have, f.name, _is_number, "a numeric column")
        if with_label:
            _require(path, have, self.label, _is_number, "a numeric 0/1 label column")
        if self.group is not None:
            _require(path, have, self.group, _is_int, "an integer group-key column")

    def check_compatible(self, other: Schema, where: str) -> None:
        """Raise DataError unless `other` (e.g. a teacher's schema) has the same features."""
        mine = [(f.name, f.vocab_size, f.multi_valued) for f in self.sparse] + self.dense_names
        theirs = [(f.name, f.vocab_size, f.multi_valued) for f in other.sparse] + other.dense_names
        if mine != theirs:
            diff = sorted(set(map(str, mine)) ^ set(map(str, theirs)))
            raise DataError(
                f"{where}: trained on other features than this dataset; differing: {diff[:6]}"
            )

    def to_json(self) -> dict:
        return {
            "sparse": [asdict(f) for f in self.sparse],
            "dense": [asdict(f) for f in self.dense],
            "label": self.label,
            "group": self.group,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict) -> Schema:
        return cls(
            sparse=tuple(SparseField(**f) for f in data["sparse"]),
            dense=tuple(DenseField(**f) for f in data.get("dense", [])),
            label=data.get("label", "label"),
            group=data.get("group"),
            extra=data.get("extra", {}),
        )

    def save(self, directory: str | Path) -> None:
        Path(directory, "schema.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> Schema:
        path = Path(directory, "schema.json")
        if not path.is_file():
            raise DataError(
                f"{path}: no schema.json; a dataset directory needs schema.json beside "
                "train/, valid/ and test/ (make one with `python -m recsys_kdef.data.prepare` "
                "from raw files, or `python -m recsys_kdef.data.synthetic`)"
            )
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a valid schema: {e}") from e


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _is_id_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)


def _require(path, have: dict, name: str, ok, expected: str) -> None:
    if name not in have:
        raise DataError(f"{path}: column '{name}' is missing; expected {expected}")
    if not ok(have[name]):
        raise DataError(f"{path}: column '{name}' has type {have[name]}; expected {expected}")
