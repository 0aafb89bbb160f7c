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
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys_kdef.data.schema import Schema

EmbeddingMode = Literal["per_model", "shared"]


def table_name(field: str, student: int | None) -> str:
    """Name of a field's table: `s{k}__{field}` (per_model) or the field name (shared)."""
    return field if student is None else f"s{student}__{field}"


def build_embedding_tables(
    schema: Schema, num_students: int, embedding_dim: int, mode: EmbeddingMode, init_range: float
) -> list[EmbeddingBagConfig]:
    """K x F table configs (per_model, student-major) or F (shared)."""
    students: list[int | None] = list(range(num_students)) if mode == "per_model" else [None]
    return [
        EmbeddingBagConfig(
            name=table_name(f.name, k),
            embedding_dim=embedding_dim,
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
    """Pooled embeddings of every student: KJT -> (B, K_e, F * D).

    K_e = K for per_model tables and 1 for shared ones (the towers broadcast it).

    Example::

        ebc = EmbeddingBagCollection(tables=build_embedding_tables(schema, 4, 16, "per_model", 0.01))
        emb = SparseArch(ebc, num_groups=4)(batch.sparse)  # (B, 4, F * 16)
    """

    def __init__(self, embedding_bag_collection: EmbeddingBagCollection, num_groups: int) -> None:
        super().__init__()
        self.embedding_bag_collection = embedding_bag_collection
        self.num_groups = num_groups
        configs = embedding_bag_collection.embedding_bag_configs()
        readers: dict[str, int] = {}
        for c in configs:
            for feature in c.feature_names:
                readers[feature] = readers.get(feature, 0) + 1
        # output keys in declaration (student-major) order, which the reshape below relies on
        self._keys = [
            f if readers[f] == 1 else f"{f}@{c.name}" for c in configs for f in c.feature_names
        ]
        if len(configs) % num_groups:
            raise ValueError(f"{len(configs)} tables cannot form {num_groups} equal groups")

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        values = _values_in_order(self.embedding_bag_collection(features), self._keys)
        return values.view(values.shape[0], self.num_groups, -1)


@torch.fx.wrap  # one node when TorchRec's train pipeline traces the model (it branches on keys)
def _values_in_order(pooled: KeyedTensor, keys: list[str]) -> torch.Tensor:
    """(B, K_e * F * D) pooled values with the tables in declaration order (`keys`)."""
    if pooled.keys() == keys:
        return pooled.values()
    return torch.cat([pooled[k] for k in keys], dim=1)  # a sharded collection may regroup
