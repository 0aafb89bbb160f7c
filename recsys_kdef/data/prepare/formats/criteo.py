"""Criteo display advertising: the Kaggle challenge's train.txt and the 1TB release's day files.

Tab-separated, no header: label, 13 integer features I1..I13, 26 hashed categorical features
C1..C26 (8 hex digits), any of them empty. Integer features are either bucketised into
categorical ids as FuxiCTR does for Criteo_x4 (`floor(ln(x)^2)` for x > 2, else x; empty is
missing, i.e. OOV), or kept as dense numbers `ln(1 + max(x, 0))` (DLRM's transform; empty
is 0). Empty categorical values are missing too.
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_kdef.data.prepare.formats.base import Features, FieldSpec, Format, int8, require_binary
from recsys_kdef.data.prepare.text import Chunk, TextLayout

INTEGER = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]


def bucketize(values: np.ndarray) -> np.ndarray:
    """FuxiCTR's convert_to_bucket: floor(ln(x)^2) for x > 2, x otherwise."""
    x = values.astype(np.float64)
    big = x > 2
    out = values.astype(np.int64)
    out[big] = np.floor(np.log(x[big]) ** 2).astype(np.int64)
    return out


class Criteo(Format):
    name = "criteo"
    description = "Criteo Kaggle train.txt / Criteo 1TB day_N (label, I1..I13, C1..C26; TSV)"
    default_min_count = 10
    file_patterns = ("train.txt", "day_*", "*.tsv")  # not Kaggle's unlabelled test.txt
    layout = TextLayout(
        delimiter="\t",
        columns=("label", *INTEGER, *CATEGORICAL),
        types={"label": pa.int64(), **{c: pa.int64() for c in INTEGER}},
    )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--numeric",
            choices=["bucket", "dense"],
            default="bucket",
            help="I1..I13 as bucketised categorical ids (FuxiCTR Criteo_x4) or dense ln(1+x)",
        )

    def fields(self) -> list[FieldSpec]:
        kind = "dense" if self.args.numeric == "dense" else "sparse"
        return [FieldSpec(c, kind) for c in INTEGER] + [FieldSpec(c) for c in CATEGORICAL]

    def options(self) -> dict:
        return {"numeric": self.args.numeric}

    def features(self, chunk: Chunk) -> Features:
        chunk = require_binary(chunk, "label")
        t = chunk.table
        sparse, dense = {}, {}
        for c in INTEGER:
            values = pc.fill_null(t[c], 0).to_numpy()
            if self.args.numeric == "dense":
                dense[c] = np.log1p(np.maximum(values, 0)).astype(np.float32)
            else:  # a missing value stays missing: the OOV id, as FuxiCTR's fill value
                missing = t[c].is_null().to_numpy(zero_copy_only=False)
                sparse[c] = pa.array(bucketize(values), mask=missing)
        for c in CATEGORICAL:
            sparse[c] = t[c].combine_chunks()
        return Features(sparse, dense, int8(t["label"]), chunk.lines)
