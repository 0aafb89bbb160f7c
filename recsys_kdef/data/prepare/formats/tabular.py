"""Any CSV or Parquet table, described by a small YAML spec:

label: clicked              # a 0/1 column
sparse: [user_id, item_id]  # categorical columns (any values; they get vocabularies)
multi_valued: {tags: "|"}   # list columns: a separator (CSV) or a Parquet list column
dense: [price]              # numeric columns (empty -> 0)
group: user_id              # optional: the sparse field used for gAUC
delimiter: ","              # CSV only; the first line is the header
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from recsys_kdef.data.prepare.formats.base import (
    Features,
    FieldSpec,
    Format,
    int8,
    require_binary,
    require_columns,
    split_tokens,
)
from recsys_kdef.data.prepare.text import BadRows, Chunk, TextLayout, read_parquet, read_text
from recsys_kdef.data.schema import DataError


@dataclass(kw_only=True)
class TableSpec:
    """Which columns of a table are the label, the sparse, multi-valued and dense fields."""

    label: str
    sparse: list[str] = field(default_factory=list)
    multi_valued: dict[str, str] = field(default_factory=dict)
    dense: list[str] = field(default_factory=list)
    group: str | None = None
    delimiter: str = ","

    @classmethod
    def load(cls, path: Path) -> TableSpec:
        if not path.is_file():
            raise DataError(f"{path}: spec file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(e, "problem", None) or str(e)
            raise DataError(
                f"{where}: not valid YAML ({problem}); expected a mapping like "
                "'label: clicked', 'sparse: [user_id, item_id]'"
            ) from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e})") from None
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
        spec = cls(**data)
        if not spec.sparse and not spec.multi_valued:
            raise DataError(f"{path}: name at least one sparse or multi_valued column")
        if spec.group is not None and spec.group not in spec.sparse:
            raise DataError(f"{path}: group '{spec.group}' must be one of the sparse columns")
        return spec

    @property
    def columns(self) -> list[str]:
        return [self.label, *self.sparse, *self.multi_valued, *self.dense]


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

    def fields(self) -> list[FieldSpec]:
        s = self.spec
        return (
            [FieldSpec(c) for c in s.sparse]
            + [FieldSpec(c, "multi", "mean") for c in s.multi_valued]
            + [FieldSpec(c, "dense") for c in s.dense]
        )

    def options(self) -> dict:
        return {"spec": vars(self.spec)}

    def chunks(self, path: Path, bad: BadRows, chunk_bytes: int) -> Iterator[Chunk]:
        types = {self.spec.label: pa.int64(), **{c: pa.float64() for c in self.spec.dense}}
        return read_text(path, TextLayout(self.spec.delimiter, types=types), bad, chunk_bytes)

    def features(self, chunk: Chunk) -> Features:
        require_columns(chunk, self.spec.columns)
        chunk = require_binary(chunk, self.spec.label)
        t = chunk.table
        sparse = {c: t[c].combine_chunks() for c in self.spec.sparse}
        for c, separator in self.spec.multi_valued.items():
            col = t[c]
            is_list = pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            sparse[c] = col.combine_chunks() if is_list else split_tokens(col, separator)
        dense = {
            c: pc.fill_null(t[c].cast(pa.float64()), 0).to_numpy().astype(np.float32)
            for c in self.spec.dense
        }
        return Features(sparse, dense, int8(t[self.spec.label]), chunk.lines)


class TabularParquet(Tabular):
    name = "parquet"
    description = "Parquet files, described by --spec YAML"
    file_patterns = ("*.parquet", "*.pq")

    def header_lines(self) -> int:
        return 0

    def count_rows(self, path: Path) -> int:
        return pq.ParquetFile(path).metadata.num_rows

    def chunks(self, path: Path, bad: BadRows, chunk_bytes: int) -> Iterator[Chunk]:
        return read_parquet(path, self.spec.columns, bad)
