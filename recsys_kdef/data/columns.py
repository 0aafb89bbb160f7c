"""Rows of a CTR dataset as NumPy columns: decoded from Arrow, shuffled, cut into Batches.

Sparse fields are jagged: per field a flat `values` array and per-row `lengths`, so single-
and multi-valued fields (and null ids, which become empty bags) are handled alike. A behaviour
sequence becomes `max_len` positional features (`Schema.feature_names`): position i holds the
i-th of the row's last min(len, max_len) ids (oldest first, left-aligned); positions past them
are empty bags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_kdef.data.batch import Batch
from recsys_kdef.data.schema import DataError, Schema


@dataclass
class Columns:
    """N rows: dense (N, Dd) float32, per KJT key (values, lengths), labels (N,), groups (N,).

    The keys are `Schema.feature_names`: each sparse field, or each position of a sequence.
    """

    dense: np.ndarray
    values: list[np.ndarray]
    lengths: list[np.ndarray]
    labels: np.ndarray
    groups: np.ndarray | None

    def __len__(self) -> int:
        return self.labels.shape[0]

    @classmethod
    def from_arrow(
        cls, table: pa.Table, schema: Schema, where: str, with_label: bool = True
    ) -> Columns:
        """Decode an Arrow table (one row group), checking ids and labels; `where` names it in errors.
        Without labels (scoring), labels are zeros."""
        values, lengths = [], []
        for f in schema.sparse:
            col = table.column(f.name).combine_chunks()
            if f.multi_valued:
                lens = pc.fill_null(pc.list_value_length(col), 0).to_numpy().astype(np.int32)
                flat = pc.list_flatten(col)
                if flat.null_count:
                    raise DataError(
                        f"{where}: column '{f.name}' has null ids inside a list; expected integer ids"
                    )
                ids = flat.to_numpy().astype(np.int64)
            else:
                valid = col.is_valid().to_numpy(zero_copy_only=False)
                lens = valid.astype(np.int32)
                ids = pc.drop_null(col).to_numpy().astype(np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= f.vocab_size):
                bad = ids[(ids < 0) | (ids >= f.vocab_size)][0]
                raise DataError(
                    f"{where}: column '{f.name}' has id {bad}, outside [0, {f.vocab_size}) "
                    f"(vocab_size in schema.json); remap or hash ids into that range"
                )
            if f.sequence_of is not None:
                positions = _positions(ids, lens, f.max_len)
                values += [v for v, _ in positions]
                lengths += [n for _, n in positions]
                continue
            values.append(ids)
            lengths.append(lens)
        n = table.num_rows
        dense = np.zeros((n, len(schema.dense)), dtype=np.float32)
        for j, f in enumerate(schema.dense):
            col = pc.fill_null(table.column(f.name).combine_chunks(), 0)
            dense[:, j] = col.to_numpy(zero_copy_only=False)
        labels = _labels(table, schema, where) if with_label else np.zeros(n, np.float32)
        groups = None
        if schema.group is not None:
            gcol = table.column(schema.group).combine_chunks()
            if gcol.null_count:
                raise DataError(f"{where}: column '{schema.group}' (the group key) has nulls")
            groups = gcol.to_numpy().astype(np.int64)
        return cls(dense, values, lengths, labels, groups)

    @classmethod
    def padding(cls, schema: Schema, rows: int = 1) -> Columns:
        """Filler rows (id 0, zeros) for ranks that ran out of data in a collective evaluation."""
        return cls(
            dense=np.zeros((rows, len(schema.dense)), np.float32),
            values=[np.zeros(rows, np.int64) for _ in schema.feature_names],
            lengths=[np.ones(rows, np.int32) for _ in schema.feature_names],
            labels=np.zeros(rows, np.float32),
            groups=None if schema.group is None else np.full(rows, -1, np.int64),
        )

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        parts = [p for p in parts if len(p)] or parts[:1]
        if len(parts) == 1:
            return parts[0]
        return Columns(
            dense=np.concatenate([p.dense for p in parts]),
            values=[np.concatenate(vs) for vs in zip(*(p.values for p in parts), strict=True)],
            lengths=[np.concatenate(ls) for ls in zip(*(p.lengths for p in parts), strict=True)],
            labels=np.concatenate([p.labels for p in parts]),
            groups=None if parts[0].groups is None else np.concatenate([p.groups for p in parts]),
        )

    def take(self, idx: np.ndarray) -> Columns:
        """The rows at `idx` (a permutation or a slice of one), jagged fields included."""
        values, lengths = [], []
        for vals, lens in zip(self.values, self.lengths, strict=True):
            new_lens = lens[idx]
            if vals.shape[0] == lens.shape[0] and np.all(lens == 1):  # fast path: one id per row
                values.append(vals[idx])
            else:
                starts = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])[idx]
                new_offsets = np.concatenate([[0], np.cumsum(new_lens, dtype=np.int64)])
                gather = np.repeat(starts - new_offsets[:-1], new_lens) + np.arange(new_offsets[-1])
                values.append(vals[gather])
            lengths.append(new_lens)
        return Columns(
            dense=self.dense[idx],
            values=values,
            lengths=lengths,
            labels=self.labels[idx],
            groups=None if self.groups is None else self.groups[idx],
        )

    def to_batch(self, keys: list[str], padding: bool = False) -> Batch:
        sparse = KeyedJaggedTensor(
            keys=keys,
            values=torch.from_numpy(np.concatenate(self.values)),
            lengths=torch.from_numpy(np.concatenate(self.lengths)),
        )
        return Batch(
            dense=torch.from_numpy(np.ascontiguousarray(self.dense)),
            sparse=sparse,
            labels=torch.from_numpy(self.labels),
            groups=None if self.groups is None else torch.from_numpy(self.groups),
            padding=padding,
        )


def _positions(
    ids: np.ndarray, lens: np.ndarray, max_len: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A jagged sequence (flat ids, per-row lengths) as max_len one-id features (values, lengths):
    position i of a row holds the i-th of its last min(len, max_len) ids, or nothing."""
    kept = np.minimum(lens, max_len)
    first = np.cumsum(lens, dtype=np.int64) - kept  # where each row's kept ids start in `ids`
    out = []
    for i in range(max_len):
        has = kept > i
        out.append((ids[first[has] + i], has.astype(np.int32)))
    return out


def _labels(table: pa.Table, schema: Schema, where: str) -> np.ndarray:
    """The label column as float32 0/1, or a DataError naming the nulls or the bad value."""
    col = table.column(schema.label).combine_chunks()
    if col.null_count:
        raise DataError(f"{where}: column '{schema.label}' (the label) has {col.null_count} nulls")
    labels = col.to_numpy(zero_copy_only=False).astype(np.float32)
    if labels.size and not np.all((labels == 0) | (labels == 1)):
        bad = labels[(labels != 0) & (labels != 1)][0]
        raise DataError(
            f"{where}: column '{schema.label}' (the label) has value {bad}; expected 0 or 1"
        )
    return labels
