"""Embedding tables of the ensemble, all in ONE EmbeddingBagCollection, and their lookup.

per_model: student k owns table `s{k}__{field}` for every field (K x F tables). Tables that
read the same feature get output keys `field@table` (NOTES §2), so the input KJT carries
each feature once and one fused lookup serves all students; the planner shards all
K x F tables together. shared: one table per field (F tables), as in the KDEF code.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_kdef.data.schema import Schema

EmbeddingMode = Literal["per_model", "shared"]


def table_name(field: str, student: int | None) -> str:
    """Name of a field's table: `s{k}__{field}` (per_model) or the field name (shared)."""
    return field if student is None else f"s{student}__{field}"


def build_embedding_tables(
    schema: Schema, dims: list[int], mode: EmbeddingMode, init_range: float
) -> list[EmbeddingBagConfig]:
    """K x F table configs (per_model, student-major; student k's of dimension dims[k]) or F
    (shared, of dimension dims[0])."""
    students: list[int | None] = list(range(len(dims))) if mode == "per_model" else [None]
    return [
        EmbeddingBagConfig(
            name=table_name(f.name, k),
            embedding_dim=dims[k or 0],
            num_embeddings=f.vocab_size,
            feature_names=[f.name],
            pooling=PoolingType.MEAN if f.pooling == "mean" else PoolingType.SUM,
            weight_init_min=-init_range,
            weight_init_max=init_range,
        )
        for k in students
        for f in schema.sparse
    ]


class SparseArch(nn.Module):
    """Pooled embeddings of every table, side by side in declaration order: KJT -> (B, T).

    T = sum of the tables' dimensions (per_model: student-major, so student k's F fields are
    one contiguous slice; recsys_kdef.models.ensemble cuts it per student group).

    Example::

        ebc = EmbeddingBagCollection(tables=build_embedding_tables(schema, [16] * 4, "per_model", 0.01))
        emb = SparseArch(ebc)(batch.sparse)  # (B, 4 * F * 16)
    """

    def __init__(self, embedding_bag_collection: EmbeddingBagCollection) -> None:
        super().__init__()
        self.embedding_bag_collection = embedding_bag_collection
        configs = embedding_bag_collection.embedding_bag_configs()
        readers: dict[str, int] = {}
        for c in configs:
            for feature in c.feature_names:
                readers[feature] = readers.get(feature, 0) + 1
        # output keys in declaration (student-major) order, which the reshape below relies on
        self._keys = [
            f if readers[f] == 1 else f"{f}@{c.name}" for c in configs for f in c.feature_names
        ]

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.embedding_bag_collection(features)
        values = pooled.values()  # (B, K_e * F * D), tables in declaration order
        if pooled.keys() != self._keys:  # a sharded collection may regroup its outputs
            values = torch.cat([pooled[k] for k in self._keys], dim=1)
        return values
