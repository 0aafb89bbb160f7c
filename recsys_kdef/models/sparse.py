"""Embedding tables of the ensemble, all in ONE EmbeddingBagCollection, and their lookup.

per_model: student k owns table `s{k}__{field}` for every field (K x F tables). Tables that
read the same feature get output keys `field@table` (docs/papers.md §2), so the input KJT carries
each feature once and one fused lookup serves all students; the planner shards all
K x F tables together. shared: one table per field (F tables), as in the KDEF code.

A behaviour sequence (schema `sequence_of`) has no table: its positional features
`<seq>#0 .. <seq>#{L-1}` are extra feature names of its target field's table, so the
target and its history share one table, which the planner shards like any other.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys_kdef.data.schema import Schema

EmbeddingMode = Literal["per_model", "shared"]


def table_name(field: str, student: int | None) -> str:
    """Name of a field's table: `s{k}__{field}` (per_model) or the field name (shared)."""
    return field if student is None else f"s{student}__{field}"


def build_embedding_tables(
    schema: Schema, dims: list[int], mode: EmbeddingMode, init_range: float
) -> list[EmbeddingBagConfig]:
    """K x F table configs (per_model, student-major; student k's of dimension dims[k]) or F
    (shared, of dimension dims[0]); F counts the fields that are not sequences."""
    students: list[int | None] = list(range(len(dims))) if mode == "per_model" else [None]
    return [
        EmbeddingBagConfig(
            name=table_name(f.name, k),
            embedding_dim=dims[k or 0],
            num_embeddings=f.vocab_size,
            feature_names=table_features(schema, f.name),
            pooling=PoolingType.MEAN if f.pooling == "mean" else PoolingType.SUM,
            weight_init_min=-init_range,
            weight_init_max=init_range,
        )
        for k in students
        for f in schema.sparse
        if f.sequence_of is None
    ]


def table_features(schema: Schema, field: str) -> list[str]:
    """The features a field's table reads: the field, then the positions of its sequences."""
    seqs = [s for s in schema.sequences if s.sequence_of == field]
    return [field, *(k for s in seqs for k in s.feature_names)]


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
        return _values_in_order(self.embedding_bag_collection(features), self._keys)


@torch.fx.wrap  # one node when TorchRec's train pipeline traces the model (it branches on keys)
def _values_in_order(pooled: KeyedTensor, keys: list[str]) -> torch.Tensor:
    """(B, T) pooled values with the tables in declaration order (`keys`)."""
    if pooled.keys() == keys:
        return pooled.values()
    return torch.cat([pooled[k] for k in keys], dim=1)  # a sharded collection may regroup


class SequenceCut(nn.Module):
    """Cuts one student's pooled features into its F fields and its behaviour sequences.

    A student's tables output Nf pooled features (`table_features` of each non-sequence field,
    in schema order): x (n, B, Nf, D). `forward` gives the F fields in schema order (n, B, F, D),
    a sequence field pooled over its positions (sum or mean, its `pooling`), and the sequences
    (n, B, S, L, D) with their mask (B, S, L) (L = the longest max_len; shorter ones padded).

    Example::

        cut = SequenceCut(schema)
        mask = cut.mask(batch.sparse)  # (B, S, L)
        fields, seq = cut(x, mask)  # (n, B, F, D), (n, B, S, L, D)
    """

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        features = [
            k
            for f in schema.sparse
            if f.sequence_of is None
            for k in table_features(schema, f.name)
        ]
        seqs = schema.sequences
        self.num_features = len(features)
        self.max_len = max((s.max_len for s in seqs), default=0)
        self.positions = [
            [*s.feature_names, *[None] * (self.max_len - s.max_len)] for s in seqs
        ]  # (S, L) feature names, None for padding
        # a sequence's positions are consecutive features of its target's table (table_features)
        self.spans = [(features.index(s.feature_names[0]), s.max_len) for s in seqs]
        # pooled fields in schema order: a plain field's feature, or a sequence's pooled slot
        slot = {f.name: features.index(f.name) for f in schema.sparse if f.sequence_of is None}
        slot.update({s.name: len(features) + i for i, s in enumerate(seqs)})
        self.register_buffer(
            "field_index", torch.tensor([slot[f.name] for f in schema.sparse]), False
        )
        self.register_buffer(
            "mean_pooled", torch.tensor([s.pooling == "mean" for s in seqs]), False
        )
        self._key_index: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def num_sequences(self) -> int:
        return len(self.positions)

    def mask(self, features: KeyedJaggedTensor) -> torch.Tensor | None:
        """(B, S, L) True where a sequence has an id, from the batch's lengths (None: no sequences)."""
        if not self.positions:
            return None
        keys = tuple(features.keys())
        if keys not in self._key_index:
            rows = {k: i for i, k in enumerate(keys)}
            self._key_index[keys] = torch.tensor(
                [rows[k] if k else len(keys) for row in self.positions for k in row]
            )
        index = self._key_index[keys].to(features.lengths().device)
        lengths = features.lengths().view(len(keys), -1)  # (keys, B), KJT lengths are key-major
        lengths = torch.cat([lengths, torch.zeros_like(lengths[:1])])[index]  # (S * L, B)
        return (lengths > 0).t().reshape(-1, self.num_sequences, self.max_len)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (n, B, Nf, D), mask (B, S, L) -> fields (n, B, F, D), sequences (n, B, S, L, D)."""
        if mask is None:
            return x, None
        # each sequence is a slice of the features (a view: no gather, and a free backward),
        # padded to the longest max_len
        parts = [x.narrow(2, start, length) for start, length in self.spans]  # (n, B, L_s, D)
        if len(parts) == 1 and self.spans[0][1] == self.max_len:
            seq = parts[0].unsqueeze(2)  # (n, B, 1, L, D)
        else:
            pad = [F.pad(p, (0, 0, 0, self.max_len - p.shape[2])) for p in parts]
            seq = torch.stack(pad, dim=2)  # (n, B, S, L, D)
        m = mask.unsqueeze(-1).to(x.dtype)  # (B, S, L, 1)
        pooled = (seq * m).sum(dim=3)  # (n, B, S, D)
        count = m.sum(dim=2).clamp(min=1)  # (B, S, 1)
        pooled = pooled / torch.where(self.mean_pooled.unsqueeze(-1), count, torch.ones_like(count))
        fields = torch.cat([x, pooled], dim=2)[:, :, self.field_index]  # (n, B, F, D)
        return fields, seq
