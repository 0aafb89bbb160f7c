"""What a CTR dataset holds: categorical (sparse) fields, numeric (dense) fields, a label, a group key.

A dataset directory carries its schema as `schema.json` beside `train/`, `valid/`, `test/`.
Sparse ids are integers in [0, vocab_size); a multi-valued field is a Parquet list column.
A behaviour sequence (`sequence_of`) is a list column of the ids of another, single-valued
field (the target item), oldest first; the model reads its last `max_len` ids as positional
features `<name>#0 .. <name>#{max_len - 1}` looked up in the target's table.
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
    """A categorical field: one id per row, or a bag of ids if `multi_valued`.

    With `sequence_of` set, a user-behaviour sequence of the ids of that (target) field: a list
    column (multi_valued), oldest first, of which the last `max_len` ids are kept. It has no
    table of its own: position i is feature `<name>#i`, looked up in the target's table.
    Students that do not read sequences see it as one pooled field (`pooling` of its positions).
    """

    name: str
    vocab_size: int
    multi_valued: bool = False
    pooling: Literal["sum", "mean"] = "sum"
    sequence_of: str | None = None
    """The single-valued field (e.g. the target item id) whose ids and table this sequence shares."""
    max_len: int = 0
    """Positions kept of a sequence (its last ids); 0 for fields that are not sequences."""

    @property
    def feature_names(self) -> list[str]:
        """Its keys in a batch's KeyedJaggedTensor: the name, or `<name>#i` per position."""
        if self.sequence_of is None:
            return [self.name]
        return [f"{self.name}#{i}" for i in range(self.max_len)]


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
            _check_sequence(f, {g.name: g for g in self.sparse})
        keys = self.feature_names
        clash = {k for k in keys if keys.count(k) > 1}
        if clash:
            raise DataError(f"schema: sequence positions clash with field names: {sorted(clash)}")

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse]

    @property
    def feature_names(self) -> list[str]:
        """The keys of a batch's KeyedJaggedTensor: each field, or each position of a sequence."""
        return [k for f in self.sparse for k in f.feature_names]

    @property
    def sequences(self) -> list[SparseField]:
        """The behaviour-sequence fields, in schema order."""
        return [f for f in self.sparse if f.sequence_of is not None]

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

        def features(s: Schema) -> list:
            return [(f.name, f.vocab_size, f.multi_valued, f.sequence_of) for f in s.sparse]

        mine, theirs = features(self) + self.dense_names, features(other) + other.dense_names
        if mine != theirs:
            diff = sorted(set(map(str, mine)) ^ set(map(str, theirs)))
            raise DataError(
                f"{where}: trained on other features than this dataset; differing: {diff[:6]}"
            )

    def to_json(self) -> dict:
        return {
            "sparse": [_field_json(f) for f in self.sparse],
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


def _field_json(f: SparseField) -> dict:
    """A sparse field as JSON; the sequence keys only for sequences (older files stay as they were)."""
    data = asdict(f)
    if f.sequence_of is None:
        del data["sequence_of"], data["max_len"]
    return data


def _check_sequence(f: SparseField, fields: dict[str, SparseField]) -> None:
    """Raise DataError naming `f` unless it is a valid sequence of a single-valued target (or none)."""
    if f.sequence_of is None:
        if f.max_len:
            raise DataError(
                f"schema: sparse field '{f.name}' sets max_len without sequence_of; "
                "max_len applies to behaviour sequences only"
            )
        return
    where = f"schema: sequence field '{f.name}' (sequence_of '{f.sequence_of}')"
    target = fields.get(f.sequence_of)
    if target is None:
        raise DataError(f"{where}: no sparse field '{f.sequence_of}'; name the target item field")
    if target.multi_valued or target.sequence_of is not None:
        raise DataError(f"{where}: the target must be a single-valued field")
    if target.vocab_size != f.vocab_size:
        raise DataError(
            f"{where}: vocab_size {f.vocab_size} differs from the target's {target.vocab_size}; "
            "a sequence shares its target's table, so give both the same ids and vocab_size"
        )
    if not f.multi_valued:
        raise DataError(f"{where}: a sequence is a list column; set multi_valued: true")
    if f.max_len < 1:
        raise DataError(f"{where}: needs max_len >= 1 (the positions kept), got {f.max_len}")
    if "#" in f.name:
        raise DataError(f"{where}: the name may not contain '#' (its positions are '<name>#i')")


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
