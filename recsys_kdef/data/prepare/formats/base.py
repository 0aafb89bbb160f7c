"""What a raw format defines: its fields, how to read its files, how a chunk becomes features."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_kdef.data.prepare.text import BadRows, Chunk, TextLayout, count_lines, read_text
from recsys_kdef.data.schema import DataError


@dataclass(frozen=True)
class FieldSpec:
    """A field of the prepared dataset before its vocabulary is known."""

    name: str
    kind: str = "sparse"  # sparse | multi | sequence | dense
    pooling: str = "mean"  # for multi-valued fields and sequences (prepare/lists.py)
    sequence_of: str | None = None
    """sequence: the target field whose vocabulary (and table) the ids share; no counts of its own."""
    max_len: int = 0
    """multi or sequence: ids kept per row, the last ones (0: all; a sequence needs >= 1)."""

    @property
    def is_sparse(self) -> bool:
        return self.kind != "dense"


@dataclass
class Features:
    """One chunk's rows, ready to encode.

    sparse: per field, tokens (one per row, any Arrow type) or lists of tokens (multi-valued)
    dense:  per field, (N,) float32
    labels: (N,) 0/1
    lines:  (N,) the raw line (or row) each row came from; the random split hashes it
    filtered: raw rows the task leaves out on purpose (e.g. MovieLens ratings of 3)
    source_rows: the raw rows these rows came from, if not one each (KDD12's views)
    groups: (N,) int64 gAUC keys, when the group column is not a sparse field (FuxiCTR's meta)
    """

    sparse: dict[str, pa.Array]
    dense: dict[str, np.ndarray]
    labels: np.ndarray
    lines: np.ndarray
    filtered: int = 0
    source_rows: int | None = None  # raw rows behind these rows, if not one each (KDD12 views)
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def raw_rows(self) -> int:
        """Raw rows read for this chunk (bad rows aside): kept, expanded or filtered."""
        return (len(self) if self.source_rows is None else self.source_rows) + self.filtered


class Format:
    """A raw dataset layout. Subclasses set the class attributes and implement `features`."""

    name: str = ""
    description: str = ""
    default_min_count: int = 1
    layout: TextLayout | None = None  # None: override `chunks`
    group: str | None = None  # the user field, for gAUC
    file_patterns: tuple[str, ...] = ("*",)
    """Names (globs; a .gz / .bz2 / .zst / .lz4 suffix aside) of this format's files: a --raw
    directory means those of its files, never a README or other files beside them."""
    default_split: str = "random"  # --split when not given

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Options of this format (none by default)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def fields(self) -> list[FieldSpec]:
        raise NotImplementedError

    def resolve(self, raw: Path) -> list[Path]:
        """The files a --raw path stands for: a directory means its files named like this
        format's (file_patterns), sorted; none is an error listing what is there."""
        if not raw.is_dir():
            return [raw]
        files = sorted(p for p in raw.iterdir() if p.is_file() and not p.name.startswith("."))
        own = [
            p
            for p in files
            if any(fnmatch(_stem(p.name), g) for g in self.file_patterns) and not is_document(p)
        ]
        if not own:
            found = ", ".join(p.name for p in files[:10]) or "nothing"
            raise DataError(
                f"{raw}: no {self.name} raw file in this directory (expected names like "
                f"{', '.join(self.file_patterns)}; it holds {found}); name the files with --raw"
            )
        return own

    def split_of(self, path: Path) -> str | None:
        """The split a raw file's name says (frappe.validation.libfm: valid), if the format has
        such names; with --split files a --raw directory's files are tagged by it."""
        return None

    def inspect(self, path: Path) -> None:
        """Look at the first raw file before reading (e.g. to count libFM fields)."""

    def side_files(self, paths: list[Path]) -> list[Path]:
        """Files read besides the raw files (joined tables), for the dataset card."""
        return []

    def options(self) -> dict:
        """This format's options, for the dataset card."""
        return {}

    def chunks(self, path: Path, bad: BadRows, chunk_bytes: int) -> Iterator[Chunk]:
        assert self.layout is not None, f"{self.name}: no layout and no chunks()"
        return read_text(path, self.layout, bad, chunk_bytes)

    def header_lines(self) -> int:
        """Lines before the data in each raw file (for splits by position)."""
        return 1 if self.layout is not None and self.layout.columns is None else 0

    def count_rows(self, path: Path) -> int:
        """Data rows of a raw file without parsing it (for splits by position)."""
        return count_lines(path, self.header_lines())

    def features(self, chunk: Chunk) -> Features:
        raise NotImplementedError


DOCUMENTS = ("readme*", "license*", "licence*", "notice*", "changelog*", "copying*", "*.md")
"""Names (case aside) of the notes a release ships beside its data, never read as data."""


def is_document(path: Path) -> bool:
    """A README, licence or other note (DOCUMENTS), e.g. Criteo's readme.txt."""
    return any(fnmatch(path.name.lower(), g) for g in DOCUMENTS)


def _stem(name: str) -> str:
    """A file name without its compression suffix."""
    for suffix in (".gz", ".bz2", ".zst", ".lz4"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def require_binary(chunk: Chunk, column: str) -> Chunk:
    """The rows whose `column` (the label) is 0 or 1; each other row is a bad row."""
    col = chunk.table[column]
    ok = pc.fill_null(pc.is_in(col, value_set=pa.array([0, 1], col.type)), False)
    return chunk.require(ok, f"column '{column}' (the label) must be 0 or 1")


def require_columns(chunk: Chunk, columns: tuple[str, ...] | list[str]) -> None:
    """Stop unless the file (its header) has every column in `columns`."""
    missing = [c for c in columns if c not in chunk.table.column_names]
    if missing:
        raise DataError(
            f"{chunk.path}: columns {missing} are missing; expected the columns "
            f"{', '.join(columns)}"
        )


def int8(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return col.to_numpy().astype(np.int8)


def split_tokens(col: pa.ChunkedArray | pa.Array, separator: str) -> pa.Array:
    """'a|b|c' -> ['a', 'b', 'c']; an empty string is an empty list."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    lists = pc.split_pattern(col, separator)
    flat = pc.list_flatten(lists)
    keep = pc.not_equal(flat, "")
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    # drop the empty pieces ('' -> [''], 'a||b'), recomputing the offsets
    owner = np.repeat(np.arange(len(lengths)), lengths)
    keep_np = keep.to_numpy(zero_copy_only=False)
    new_lengths = np.bincount(owner[keep_np], minlength=len(lengths))
    offsets = np.concatenate([[0], np.cumsum(new_lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat.filter(keep))
