"""Streaming Parquet reader: disjoint row groups per rank, bounded shuffle buffer, equal step counts.

Memory holds at most `shuffle_buffer` rows plus one row group, never a whole split. Row
groups are dealt round-robin to ranks after a permutation that depends only on (seed, epoch),
so ranks never overlap and every rank can compute every rank's row count from the file
metadata. That is how all ranks agree on the number of steps: training stops at the
smallest rank's number of full batches; evaluation pads the shorter ranks with filler
batches (`Batch.padding`), because a sharded forward pass is a collective every rank joins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys_kdef.data.batch import Batch
from recsys_kdef.data.columns import Columns
from recsys_kdef.data.prefetch import prefetch
from recsys_kdef.data.schema import DataError, Schema


@dataclass(frozen=True, slots=True)
class RowGroup:
    path: Path
    index: int
    num_rows: int


def list_split_files(root: str | Path, split: str) -> list[Path]:
    """The Parquet files of one split (`<root>/<split>/*.parquet`), sorted; an error if none."""
    directory = Path(root, split)
    files = sorted(directory.glob("*.parquet"))
    if not files:
        raise DataError(f"{directory}: no *.parquet files for the '{split}' split")
    return files


class ParquetBatchReader:
    """Yields `Batch`es from Parquet files for one rank of `world_size`.

    Training (`training=True`): rows are shuffled through a bounded buffer (if
    `shuffle_buffer` > 0), only full batches are yielded, and every rank yields the same
    number. Evaluation: every row of this rank is yielded once, in file order, and shorter
    ranks are padded with filler batches up to the longest rank's count.
    Deterministic for a given (seed, epoch): call `set_epoch` before each pass.
    """

    def __init__(
        self,
        files: list[Path],
        schema: Schema,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        training: bool = True,
        shuffle_buffer: int = 0,
        seed: int = 0,
        with_labels: bool = True,
        prefetch: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.schema = schema
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.training = training
        self.shuffle_buffer = shuffle_buffer if training else 0
        self.seed = seed
        self.with_labels = with_labels
        self.prefetch = prefetch
        self.pin_memory = pin_memory
        self.epoch = 0
        self.row_groups = self._scan(files)
        self.max_buffered_rows = 0  # high-water mark of rows held in memory, for tests and logs

    def _scan(self, files: list[Path]) -> list[RowGroup]:
        groups = []
        for path in files:
            try:
                meta = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{path}: not a readable Parquet file: {e}") from e
            self.schema.check_file(path, meta.schema_arrow, with_label=self.with_labels)
            groups += [
                RowGroup(Path(path), i, meta.metadata.row_group(i).num_rows)
                for i in range(meta.metadata.num_row_groups)
            ]
        if len(groups) < self.world_size:
            raise DataError(
                f"{files[0].parent}: {len(groups)} row groups for {self.world_size} ranks; "
                "each rank needs at least one: write the files with a smaller row group size"
            )
        return groups

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _assignment(self) -> list[list[RowGroup]]:
        """Row groups of every rank for this epoch (shuffled order when training with a buffer)."""
        order = np.arange(len(self.row_groups))
        if self.shuffle_buffer:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        return [
            [self.row_groups[i] for i in order[r :: self.world_size]]
            for r in range(self.world_size)
        ]

    def __len__(self) -> int:
        """Batches every rank yields this epoch."""
        rows = [sum(g.num_rows for g in groups) for groups in self._assignment()]
        if self.training:
            return min(rows) // self.batch_size
        return max(-(-r // self.batch_size) for r in rows)

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    def batches(self, skip: int = 0) -> Iterator[Batch]:
        """This epoch's batches after the first `skip` (read and shuffled as usual, not built),
        so a resumed run sees exactly the batches an uninterrupted one would. With `prefetch`
        > 0 they are built that many ahead on a background thread (same order, errors re-raised
        here), in pinned memory if `pin_memory` (for non_blocking copies to CUDA)."""
        steps = len(self)
        if self.training and steps == 0:  # here, not when the first batch is asked for
            raise DataError(
                f"{self.row_groups[0].path.parent}: fewer rows per rank than one batch of "
                f"{self.batch_size}; lower data.batch_size"
            )
        pin = Batch.pin_memory if self.pin_memory else None
        return prefetch(self._batches(skip, steps), self.prefetch, pin)

    def _batches(self, skip: int, steps: int) -> Iterator[Batch]:
        keys = self.schema.feature_names
        emitted = 0
        for cols in self._stream_batches():
            if emitted == steps:
                return
            if emitted >= skip:
                yield cols.to_batch(keys)
            emitted += 1
        while emitted < steps:  # evaluation: shorter ranks pad (training never gets here)
            if emitted >= skip:
                yield Columns.padding(self.schema).to_batch(keys, padding=True)
            emitted += 1

    def _read(self, group: RowGroup) -> Columns:
        where = f"{group.path} (row group {group.index})"
        try:
            columns = self.schema.columns(with_label=self.with_labels)
            table = pq.ParquetFile(group.path).read_row_group(group.index, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{where}: cannot read: {e}") from e
        return Columns.from_arrow(table, self.schema, where, with_label=self.with_labels)

    def _stream_batches(self) -> Iterator[Columns]:
        """Full batches (and, when evaluating, the last partial one) of this rank's rows."""
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        bs = self.batch_size
        buffer: list[Columns] = []
        held = 0
        for group in self._assignment()[self.rank]:
            buffer.append(self._read(group))
            held += group.num_rows
            self.max_buffered_rows = max(self.max_buffered_rows, held)
            if held < max(self.shuffle_buffer, bs):
                continue
            cols = Columns.concat(buffer)
            if self.shuffle_buffer:
                cols = cols.take(rng.permutation(len(cols)))
                # emit down to half a buffer, keeping the rest to mix with the next row groups
                keep = min(len(cols), self.shuffle_buffer // 2)
            else:
                keep = 0
            n_out = (len(cols) - keep) // bs * bs
            for start in range(0, n_out, bs):
                yield cols.take(np.arange(start, start + bs))
            rest = cols.take(np.arange(n_out, len(cols)))
            buffer, held = [rest], len(rest)
        if held:
            cols = Columns.concat(buffer)
            if self.shuffle_buffer:
                cols = cols.take(rng.permutation(len(cols)))
            last = len(cols) if not self.training else len(cols) // bs * bs
            for start in range(0, last, bs):
                yield cols.take(np.arange(start, min(start + bs, last)))
