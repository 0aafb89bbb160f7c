"""Access statistics of the sparse fields, estimated from a sample of a split's Parquet row groups.

The planner's cost model scales lookup and communication costs by each table's pooling factor
(ids per row); TorchRec assumes 1.0 unless told. Multi-valued fields read several ids per row.
A behaviour sequence is looked up as positions `<name>#i` of its target's table: position i
reads an id only in rows whose kept history (the last max_len ids) is longer than i.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_kdef.data.schema import DataError, Schema


@dataclass(frozen=True, slots=True)
class FieldStats:
    """What a sample of rows says about one sparse field."""

    pooling_factor: float
    """Mean ids per row (nulls and empty bags count 0)."""
    distinct_fraction: float
    """Distinct ids in the sample / vocab_size: how much of the table the sample touched."""
    rows: int
    """Rows sampled."""


def estimate_field_stats(
    root: str | Path, schema: Schema, max_row_groups: int, split: str = "train"
) -> dict[str, FieldStats]:
    """{sparse field: FieldStats} from up to `max_row_groups` row groups spread over the split's
    files; for a sequence also {`<name>#i`: FieldStats} per position (the planner's features).

    Empty when `max_row_groups` is 0 or the split has no Parquet files (the planner then uses
    TorchRec's default pooling factor 1.0).
    """
    files = sorted(Path(root, split).glob("*.parquet"))
    if max_row_groups == 0 or not files:
        return {}
    groups = [(f, i) for f in files for i in range(pq.ParquetFile(f).num_row_groups)]
    picks = np.linspace(0, len(groups) - 1, num=min(max_row_groups, len(groups))).round()
    counts = {f.name: 0 for f in schema.sparse}
    positions = {f.name: np.zeros(f.max_len, np.int64) for f in schema.sequences}  # ids at #i
    seen: dict[str, set[int]] = {f.name: set() for f in schema.sparse}
    rows = 0
    for k in sorted({int(p) for p in picks}):
        path, index = groups[k]
        try:
            table = pq.ParquetFile(path).read_row_group(index, columns=schema.sparse_names)
        except (OSError, pa.ArrowException, KeyError) as e:
            raise DataError(f"{path}: row group {index}: cannot read sparse columns: {e}") from e
        rows += table.num_rows
        for f in schema.sparse:
            column = table.column(f.name)
            ids = pc.list_flatten(column) if f.multi_valued else column
            ids = ids.drop_null()
            counts[f.name] += len(ids)
            seen[f.name].update(np.unique(ids.to_numpy()).tolist())
            if f.name in positions:
                kept = np.minimum(
                    pc.fill_null(pc.list_value_length(column), 0).to_numpy(), f.max_len
                )
                positions[f.name] += (kept[:, None] > np.arange(f.max_len)).sum(axis=0)
    rows = max(rows, 1)
    stats = {}
    for f in schema.sparse:
        distinct = len(seen[f.name]) / f.vocab_size
        stats[f.name] = FieldStats(counts[f.name] / rows, distinct, rows)
        for i, present in enumerate(positions.get(f.name, [])):
            stats[f"{f.name}#{i}"] = FieldStats(float(present) / rows, distinct, rows)
    return stats
