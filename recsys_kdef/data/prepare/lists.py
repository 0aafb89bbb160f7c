"""List columns (multi-valued fields and behaviour sequences): their pooling and length cap.

One default for every format: a list column is mean-pooled, as FuxiCTR pools every sequence
feature whose config names no other encoder (its FeatureProcessor's default
`layers.MaskedAveragePooling()`: the sum of the ids' embeddings over the number of ids), and
is kept whole unless the format caps it (a behaviour sequence keeps its format's `max_len`).
`--pooling FIELD=sum|mean` and `--max-len FIELD=N` ('*' for every list field) change either
per field. A capped list keeps its LAST N ids: the latest, as sequences are stored oldest
first (FuxiCTR's `padding: pre`, which also truncates at the front).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_kdef.data.prepare.formats.base import Features, FieldSpec
from recsys_kdef.data.schema import DataError

POOLINGS = ("mean", "sum")
LIST_KINDS = ("multi", "sequence")


def with_list_options(
    specs: list[FieldSpec], max_len: dict[str, int], pooling: dict[str, str]
) -> list[FieldSpec]:
    """`specs` with the --max-len and --pooling choices applied to their list fields."""
    lists = [f.name for f in specs if f.kind in LIST_KINDS]
    for option, given in (("--max-len", max_len), ("--pooling", pooling)):
        unknown = sorted(set(given) - set(lists) - {"*"})
        if unknown:
            raise DataError(
                f"{option}: {unknown} are not list fields of this format; "
                f"its list fields are {', '.join(lists) or 'none'}"
            )
    for name, n in max_len.items():
        if n < 1:
            raise DataError(f"--max-len {name}={n}: a list keeps at least 1 id (N >= 1)")
    for name, p in pooling.items():
        if p not in POOLINGS:
            raise DataError(f"--pooling {name}={p}: expected one of {', '.join(POOLINGS)}")
    return [
        replace(
            f,
            max_len=max_len.get(f.name, max_len.get("*", f.max_len)),
            pooling=pooling.get(f.name, pooling.get("*", f.pooling)),
        )
        if f.name in lists
        else f
        for f in specs
    ]


def list_caps(specs: list[FieldSpec]) -> dict[str, int]:
    """The capped list fields and their max_len."""
    return {f.name: f.max_len for f in specs if f.kind in LIST_KINDS and f.max_len > 0}


def keep_last(lists: pa.Array, n: int) -> pa.Array:
    """Each list's last `n` items (a shorter list whole; a null list empty)."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    if lengths.max(initial=0) <= n:
        return lists
    flat = pc.list_flatten(lists)
    kept = np.minimum(lengths, n)
    ends = np.cumsum(lengths, dtype=np.int64)  # one past each list's last item in `flat`
    offsets = np.concatenate([[0], np.cumsum(kept, dtype=np.int64)])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], kept)
    picks = np.repeat(ends - kept, kept) + within
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), flat.take(pa.array(picks)))


def cap_lists(feats: Features, caps: dict[str, int]) -> Features:
    """`feats` with each capped list field cut to its last max_len ids (in place)."""
    for name, n in caps.items():
        feats.sparse[name] = keep_last(feats.sparse[name], n)
    return feats
