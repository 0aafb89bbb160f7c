"""libFM text files (`label idx:val idx:val ...`, space-separated), as Frappe and
MovieLens-latest are distributed for CTR benchmarks.

The i-th token of a line belongs to the i-th field (every line has the same number of
tokens); `idx` is the feature id and becomes the field's token; `val` must be 1 (one-hot).
Labels are -1/1 or 0/1; positive means 1.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_kdef.data.prepare.formats.base import Features, FieldSpec, Format
from recsys_kdef.data.prepare.text import BadRows, Chunk, TextLayout, open_raw, read_text
from recsys_kdef.data.schema import DataError

FRAPPE = [
    "user",
    "item",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
]
TOKEN = r"^(?P<idx>[0-9]+):(?P<val>[^:]*)$"


class LibFM(Format):
    name = "libfm"
    description = "libFM text (label idx:val ...), the i-th token being the i-th field"
    default_min_count = 1
    file_patterns = ("*.libfm", "*.libsvm", "*.txt")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--fields",
            help="comma-separated field names, one per token position (default f1, f2, ...)",
        )

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self._names: list[str] | None = args.fields.split(",") if args.fields else None

    def field_names(self) -> list[str]:
        if self._names is None:
            raise DataError("libfm: the number of fields is known once a file is read")
        return self._names

    def fields(self) -> list[FieldSpec]:
        return [FieldSpec(n) for n in self.field_names()]

    def options(self) -> dict:
        return {"fields": self.field_names()}

    def inspect(self, path: Path) -> None:
        """Take the field count from the first line of `path` (names f1.. unless given)."""
        with open_raw(path) as stream:
            head = stream.read(1 << 16)
        if not head.strip():
            raise DataError(
                f"{path}: no data rows (the file is empty); expected {self.description}"
            )
        first = head.split(b"\n", 1)[0].split()
        width = len(first) - 1
        if width < 1:
            raise DataError(f"{path}:1: expected 'label idx:val ...', got {first!r}")
        if self._names is None:
            self._names = [f"f{i + 1}" for i in range(width)]
        elif len(self._names) != width:
            raise DataError(
                f"{path}:1: {width} tokens after the label, but {len(self._names)} field names "
                f"were given ({','.join(self._names)})"
            )

    def chunks(self, path: Path, bad: BadRows, chunk_bytes: int) -> Iterator[Chunk]:
        layout = TextLayout(" ", ("label", *self.field_names()), {"label": pa.float64()})
        return read_text(path, layout, bad, chunk_bytes)

    def features(self, chunk: Chunk) -> Features:
        label = pc.fill_null(chunk.table["label"], 2).to_numpy()
        chunk = chunk.require(np.isin(label, [-1, 0, 1]), "the label must be -1, 0 or 1")
        for name in self.field_names():
            parts = pc.extract_regex(chunk.table[name], TOKEN)
            ok = pc.and_(
                pc.is_valid(parts), pc.is_in(pc.struct_field(parts, "val"), pa.array(["1", "1.0"]))
            )
            chunk = chunk.require(pc.fill_null(ok, False), f"field '{name}' must be idx:1")
        sparse = {
            name: pc.struct_field(
                pc.extract_regex(chunk.table[name], TOKEN), "idx"
            ).combine_chunks()
            for name in self.field_names()
        }
        labels = (chunk.table["label"].to_numpy() > 0).astype(np.int8)
        return Features(sparse, {}, labels, chunk.lines)


class Frappe(LibFM):
    name = "frappe"
    description = "Frappe's libFM files (frappe.train/validation/test.libfm), 10 named fields"
    group = "user"
    layouts = (
        {
            "train": "frappe.train.libfm",
            "valid": "frappe.validation.libfm",
            "test": "frappe.test.libfm",
        },
        {"train": "train.libsvm", "valid": "valid.libsvm", "test": "test.libsvm"},
    )
    """A --raw directory holds NFM's or BARS's (Frappe_x1) three files."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        pass

    def __init__(self, args: argparse.Namespace) -> None:
        args.fields = ",".join(FRAPPE)
        super().__init__(args)

    def resolve(self, raw: Path) -> list[Path]:
        """A directory means its three Frappe files (train, valid, test); a missing one is
        named."""
        if not raw.is_dir():
            return [raw]
        for names in self.layouts:
            if any((raw / n).is_file() for n in names.values()):
                missing = [n for n in names.values() if not (raw / n).is_file()]
                if missing:
                    raise DataError(
                        f"{raw}: {', '.join(missing)} missing (frappe reads {', '.join(names.values())})"
                    )
                return [raw / n for n in names.values()]
        raise DataError(
            f"{raw}: no Frappe files here; expected "
            + " or ".join(", ".join(names.values()) for names in self.layouts)
        )

    def split_of(self, path: Path) -> str | None:
        for names in self.layouts:
            for split, name in names.items():
                if path.name == name:
                    return split
        return None
