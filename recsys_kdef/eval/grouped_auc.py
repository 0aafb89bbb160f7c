"""gAUC in bounded memory: (group, label, probs) rows kept in partitions by a hash of the group.

Every row of a group lands in the same partition on every rank, so the within-group AUC of a
partition's groups needs only that partition's rows: partition p is gathered on rank
p % world_size (one partition per rank at a time), sorted by (group, score) and reduced. With a
directory the partitions are files there (appended as rows arrive, removed by close()), and
memory holds one partition, about 2 * rows / partitions rows; without one they are in memory
(for small validation sets). Exact either way.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from recsys_kdef.distributed.collectives import all_reduce_sum, exchange_rows

ROWS_PER_PARTITION = 1 << 19  # rows of all ranks in one spilled partition (in memory at once)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads sequential or strided ids


def num_partitions(total_rows: int, world_size: int) -> int:
    """Partitions for `total_rows` rows of all ranks: ROWS_PER_PARTITION each, a multiple of
    world_size (every rank holds one partition per round)."""
    rounds = max(1, math.ceil(total_rows / (ROWS_PER_PARTITION * world_size)))
    return rounds * world_size


class GroupRows:
    """This rank's (group, label, probs of H heads) rows, partitioned by hash(group).

    Example::

        rows = GroupRows(num_heads=3, partitions=8, directory="out/", rank=0, world_size=2)
        rows.add(groups, labels, probs)                 # (B,), (B,), (B, 3)
        auc_sum, num_groups = rows.grouped_auc_sums()   # (3,), (3,) summed over ranks
        rows.close()
    """

    def __init__(
        self,
        num_heads: int,
        *,
        partitions: int = 1,
        directory: str | Path | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if partitions % world_size:
            raise ValueError(f"{partitions} partitions for {world_size} ranks: use a multiple")
        self.partitions, self.world_size, self.rank = partitions, world_size, rank
        self.dtype = np.dtype([("group", "<i8"), ("label", "<f4"), ("probs", "<f4", (num_heads,))])
        self.num_heads = num_heads
        self.directory: Path | None = None
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.directory = Path(tempfile.mkdtemp(prefix=f"gauc-rank{rank}-", dir=directory))
            self._files = [open(self._path(p), "ab") for p in range(partitions)]  # noqa: SIM115
        self._memory: list[list[np.ndarray]] = [[] for _ in range(partitions)]

    def _path(self, partition: int) -> Path:
        assert self.directory is not None
        return self.directory / f"part-{partition:05d}.bin"

    def add(self, groups: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor) -> None:
        records = np.empty(len(groups), self.dtype)
        records["group"] = groups.cpu().numpy()
        records["label"] = labels.float().cpu().numpy()
        records["probs"] = probs.float().cpu().numpy()
        part = self._partition_of(records["group"])
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.partitions + 1))
        records = records[order]
        for p in range(self.partitions):
            chunk = records[bounds[p] : bounds[p + 1]]
            if not len(chunk):
                continue
            if self.directory is None:
                self._memory[p].append(chunk)
            else:
                chunk.tofile(self._files[p])

    def _partition_of(self, groups: np.ndarray) -> np.ndarray:
        if self.partitions == 1:
            return np.zeros(len(groups), dtype=np.int64)
        mixed = groups.astype(np.uint64) * _MIX  # wraps modulo 2**64
        return ((mixed >> np.uint64(32)) % np.uint64(self.partitions)).astype(np.int64)

    def _read(self, partition: int) -> np.ndarray:
        if self.directory is None:
            chunks = self._memory[partition]
            return np.concatenate(chunks) if chunks else np.empty(0, self.dtype)
        self._files[partition].flush()
        return np.fromfile(self._path(partition), dtype=self.dtype)

    def _rounds(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per round: the (groups, labels, probs) of the partition this rank owns in the round,
        from every rank (a collective)."""
        for first in range(0, self.partitions, self.world_size):
            mine = [
                self._read(first + r) for r in range(self.world_size)
            ]  # partition first + r -> r
            dest = torch.cat([torch.full((len(m),), r) for r, m in enumerate(mine)])
            records = np.concatenate(mine)
            values = np.concatenate([records["label"][:, None], records["probs"]], axis=1)
            groups = exchange_rows(torch.from_numpy(records["group"].copy()), dest)
            values = exchange_rows(torch.from_numpy(values), dest)
            del mine, records
            yield groups, values[:, 0], values[:, 1:]

    def grouped_auc_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of within-group AUCs, groups counted), each (H,), over all ranks (a collective)."""
        auc_sum = torch.zeros(self.num_heads, dtype=torch.float64)
        count = torch.zeros(self.num_heads, dtype=torch.float64)
        for groups, labels, probs in self._rounds():
            s, n = grouped_auc(groups, probs, labels)
            auc_sum += s
            count += n
        totals = all_reduce_sum(torch.cat([auc_sum, count]))
        return totals[: self.num_heads], totals[self.num_heads :]

    def close(self) -> None:
        """Remove the partition files (safe to call twice, and after an error)."""
        self._memory = [[] for _ in range(self.partitions)]
        if self.directory is not None:
            for f in self._files:
                f.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def grouped_auc(
    groups: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over groups of the within-group AUC (ties count 1/2), and the groups counted, per head.

    groups (N,), probs (N, H), labels (N,) in {0, 1}. Groups whose rows are all one class, or
    whose predictions are all equal, are skipped (TorchRec's GAUC rule). Returns two (H,)
    tensors. Rows are sorted by (group, score) once per head; no padding to the longest group.
    """
    num_heads = probs.shape[1]
    auc_sum = torch.zeros(num_heads, dtype=torch.float64)
    count = torch.zeros(num_heads, dtype=torch.float64)
    if groups.numel() == 0:
        return auc_sum, count
    _, group_index = torch.unique(groups, return_inverse=True)
    y = labels.double()
    pos = torch.zeros(int(group_index.max()) + 1, dtype=torch.float64).index_add_(0, group_index, y)
    rows = torch.bincount(group_index).double()
    mixed = ((pos > 0) & (pos < rows))[group_index]  # rows of groups with both classes
    group_index, y, probs = group_index[mixed], y[mixed], probs[mixed]
    if not len(y):
        return auc_sum, count
    _, group_index = torch.unique(group_index, return_inverse=True)  # 0 .. G-1
    num_groups = int(group_index.max()) + 1
    pos = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group_index, y)
    pairs = pos * (torch.bincount(group_index, minlength=num_groups).double() - pos)  # (G,)
    for h in range(num_heads):
        by_score = torch.argsort(probs[:, h], stable=True)
        order = by_score[torch.argsort(group_index[by_score], stable=True)]  # (group, score)
        g, p, label = group_index[order], probs[order, h], y[order]
        neg = 1 - label
        neg_before = torch.cumsum(neg, 0) - neg  # negatives before each row, over all groups
        # runs of equal (group, score): a positive beats the negatives of earlier runs of its
        # group and ties with those of its own run
        new_run = torch.ones(len(g), dtype=torch.bool)
        new_run[1:] = (g[1:] != g[:-1]) | (p[1:] != p[:-1])
        run = torch.cumsum(new_run, 0) - 1
        run_first = torch.nonzero(new_run).squeeze(1)
        run_neg = torch.zeros(len(run_first), dtype=torch.float64).index_add_(0, run, neg)
        new_group = torch.ones(len(g), dtype=torch.bool)
        new_group[1:] = g[1:] != g[:-1]
        group_neg_before = neg_before[new_group]  # (G,) negatives before each group's rows
        below = neg_before[run_first][run] - group_neg_before[g]
        wins = label * (below + 0.5 * run_neg[run])
        group_wins = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, g, wins)
        runs_per_group = torch.bincount(g[run_first], minlength=num_groups)
        counted = runs_per_group > 1  # not all predictions equal
        auc_sum[h] = (group_wins[counted] / pairs[counted]).sum()
        count[h] = counted.sum()
    return auc_sum, count
