"""Any CSV or Parquet table, described by a small YAML spec:

label: clicked              # a 0/1 column
sparse: [user_id, item_id]  # categorical columns (any values; they get vocabularies)
multi_valued: {tags: "|"}   # list columns: a separator (CSV) or a Parquet list column, or
                            # {separator: "|", pooling: mean|sum, max_len: N}
sequences:                  # behaviour sequences of a sparse (target) column, oldest first
  item_history: {of: item_id, separator: "^", max_len: 100}
dense: [price]              # numeric columns (empty -> 0)
group: user_id              # optional gAUC key: a sparse column (its ids), or another
                            # integer column, written as it is and not a feature
delimiter: ","              # CSV only; the first line is the header

List columns are mean-pooled unless `pooling: sum` (prepare/lists.py); `max_len` keeps each
row's last N ids (a sequence needs it).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from recsys_kdef.config.loading import yaml_problem
from recsys_kdef.data.prepare.formats.base import (
    Features,
    FieldSpec,
    Format,
    int8,
    require_binary,
    require_columns,
    split_tokens,
)
from recsys_kdef.data.prepare.lists import POOLINGS
from recsys_kdef.data.prepare.text import BadRows, Chunk, TextLayout, read_parquet, read_text
from recsys_kdef.data.schema import DataError


@dataclass(kw_only=True)
class ListSpec:
    """A list column: its separator in CSV text, pooling, length cap, and (a sequence) target."""

    separator: str = "|"
    pooling: str = "mean"
    max_len: int = 0
    of: str | None = None
    """sequences: the sparse column whose ids (and table) the sequence shares."""

    @classmethod
    def parse(cls, name: str, value, sequence: bool) -> ListSpec:
        """A spec entry: a separator string (multi_valued only) or a mapping of these keys."""
        if isinstance(value, str) and not sequence:
            return cls(separator=value)
        known = {f.name for f in fields(cls)} - ({"of"} if not sequence else set())
        if not isinstance(value, dict) or set(value) - known:
            what = "sequences" if sequence else "multi_valued"
            raise DataError(
                f"{what} '{name}': expected a mapping with keys {sorted(known)}"
                + ("" if sequence else " or a separator string")
                + f", got {value!r}"
            )
        spec = cls(**({"separator": "^"} if sequence else {}) | value)
        if spec.pooling not in POOLINGS:
            raise DataError(f"'{name}': pooling must be mean or sum, got {spec.pooling!r}")
        if sequence and (spec.of is None or spec.max_len < 1):
            raise DataError(f"sequences '{name}': needs of: TARGET and max_len: N >= 1")
        if spec.max_len < 0:
            raise DataError(f"'{name}': max_len must be >= 0 (0: keep every id)")
        return spec


@dataclass(kw_only=True)
class TableSpec:
    """Which columns of a table are the label, the sparse, list and dense fields, the group."""

    label: str
    sparse: list[str] = field(default_factory=list)
    multi_valued: dict[str, ListSpec] = field(default_factory=dict)
    sequences: dict[str, ListSpec] = field(default_factory=dict)
    dense: list[str] = field(default_factory=list)
    group: str | None = None
    delimiter: str = ","

    def __post_init__(self) -> None:
        self.multi_valued = {
            k: v if isinstance(v, ListSpec) else ListSpec.parse(k, v, sequence=False)
            for k, v in self.multi_valued.items()
        }
        self.sequences = {
            k: v if isinstance(v, ListSpec) else ListSpec.parse(k, v, sequence=True)
            for k, v in self.sequences.items()
        }
        if not self.sparse and not self.multi_valued:
            raise DataError("name at least one sparse or multi_valued column")
        for name, s in self.sequences.items():
            if s.of not in self.sparse:
                raise DataError(
                    f"sequences '{name}': of: {s.of!r} must be one of the sparse columns "
                    f"{self.sparse} (the target item whose ids the sequence shares)"
                )
        if self.group in {self.label, *self.multi_valued, *self.sequences, *self.dense}:
            raise DataError(
                f"group '{self.group}' must be a sparse column or an integer column of its own"
            )

    @classmethod
    def load(cls, path: Path) -> TableSpec:
        if not path.is_file():
            raise DataError(f"{path}: spec file not found")
        try:
            data = yaml.safe_load(path.read_bytes().decode()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise DataError(
                f"{yaml_problem(path, e)}; expected a mapping like "
                "'label: clicked', 'sparse: [user_id, item_id]'"
            ) from None
        if not isinstance(data, dict):
            raise DataError(
                f"{path}: expected a mapping of keys (label, sparse, ...), got a "
                f"{type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or "label" not in data:
            raise DataError(
                f"{path}: {'unknown keys ' + str(unknown) if unknown else 'no label'}; "
                f"a spec has the keys {sorted(known)} (label required)"
            )
        try:
            return cls(**data)
        except DataError as e:
            raise DataError(f"{path}: {e}") from e

    @property
    def raw_group(self) -> str | None:
        """The group column when it is not a sparse field: read as integers, written as is."""
        return None if self.group is None or self.group in self.sparse else self.group

    @property
    def columns(self) -> list[str]:
        lists = [*self.multi_valued, *self.sequences]
        return [self.label, *self.sparse, *lists, *self.dense, *filter(None, [self.raw_group])]

    def fields(self) -> list[FieldSpec]:
        return (
            [FieldSpec(c) for c in self.sparse]
            + [FieldSpec(c, "multi", s.pooling, max_len=s.max_len) for c, s in self.multi_valued.items()]
            + [FieldSpec(c, "sequence", s.pooling, s.of, s.max_len) for c, s in self.sequences.items()]
            + [FieldSpec(c, "dense") for c in self.dense]
        )  # fmt: skip

    def card(self) -> dict:
        """The spec for the dataset card; a plain separator stays a string (cards of before)."""
        data = asdict(self)
        for name, s in self.multi_valued.items():
            if s == ListSpec(separator=s.separator):
                data["multi_valued"][name] = s.separator
        if not self.sequences:
            del data["sequences"]
        return data


class Tabular(Format):
    name = "csv"
    description = "a CSV file with a header, described by --spec YAML"
    file_patterns = ("*.csv", "*.tsv", "*.txt")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--spec", type=Path, required=True, help="YAML naming the columns")

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.spec = TableSpec.load(args.spec)
        self.group = self.spec.group
        self.group_source = self.spec.raw_group

    group_source: str | None = None
    """The integer column copied, as it is, into the group column (None: the group is a field)."""

    @property
    def columns(self) -> list[str]:
        """The columns read: the spec's and the group's source."""
        extra = [self.group_source] if self.group_source not in (None, *self.spec.columns) else []
        return [*self.spec.columns, *extra]

    def fields(self) -> list[FieldSpec]:
        return self.spec.fields()

    def options(self) -> dict:
        return {"spec": self.spec.card()}

    def chunks(self, path: Path, bad: BadRows, chunk_bytes: int) -> Iterator[Chunk]:
        s = self.spec
        types = {s.label: pa.int64(), **{c: pa.float64() for c in s.dense}}
        if self.group_source is not None:
            types[self.group_source] = pa.int64()
        return read_text(path, TextLayout(s.delimiter, types=types), bad, chunk_bytes)

    def features(self, chunk: Chunk) -> Features:
        s = self.spec
        require_columns(chunk, self.columns)
        chunk = require_binary(chunk, s.label)
        groups = None
        if (col := self.group_source) is not None:
            ok = chunk.table[col].is_valid()
            chunk = chunk.require(ok, f"column '{col}' (the gAUC group) needs an integer")
            groups = chunk.table[col].to_numpy().astype(np.int64)
        t = chunk.table
        sparse = {c: t[c].combine_chunks() for c in s.sparse}
        for c, spec in (s.multi_valued | s.sequences).items():
            col = t[c]
            is_list = pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            sparse[c] = col.combine_chunks() if is_list else split_tokens(col, spec.separator)
        dense = {
            c: pc.fill_null(t[c].cast(pa.float64()), 0).to_numpy().astype(np.float32)
            for c in s.dense
        }
        return Features(sparse, dense, int8(t[s.label]), chunk.lines, groups=groups)


class TabularParquet(Tabular):
    name = "parquet"
    description = "Parquet files, described by --spec YAML"
    file_patterns = ("*.parquet", "*.pq")

    def header_lines(self) -> int:
        return 0

    def count_rows(self, path: Path) -> int:
        return pq.ParquetFile(path).metadata.num_rows

    def chunks(self, path: Path, bad: BadRows, chunk_bytes: int) -> Iterator[Chunk]:
        return read_parquet(path, self.columns, bad)
