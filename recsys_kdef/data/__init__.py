"""CTR data: schema, synthetic generator, streaming Parquet reader, batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys_kdef.config import DataConfig
from recsys_kdef.data.batch import Batch
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import DataError, DenseField, Schema, SparseField

__all__ = [
    "Batch",
    "DataError",
    "DenseField",
    "ParquetBatchReader",
    "Readers",
    "Schema",
    "SparseField",
    "build_readers",
]


@dataclass
class Readers:
    train: ParquetBatchReader
    valid: ParquetBatchReader
    test: ParquetBatchReader


def build_readers(
    cfg: DataConfig, schema: Schema, *, rank: int, world_size: int, seed: int
) -> Readers:
    """Train (shuffled, equal full batches per rank) and valid / test (every row once) readers."""

    def reader(split: str, training: bool) -> ParquetBatchReader:
        files = list_split_files(cfg.path, split)
        if training and cfg.train_on_valid:
            files += list_split_files(cfg.path, "valid")
        return ParquetBatchReader(
            files,
            schema,
            cfg.batch_size if training else cfg.eval_batch_size,
            rank=rank,
            world_size=world_size,
            training=training,
            shuffle_buffer=cfg.shuffle_buffer,
            seed=seed,
            prefetch=cfg.prefetch,
            pin_memory=torch.cuda.is_available(),
        )

    return Readers(
        train=reader("train", True), valid=reader("valid", False), test=reader("test", False)
    )
