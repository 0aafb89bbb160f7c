"""How per-model tables are laid out, and the cut of the pooled embeddings into student groups.

separate: student k owns table `s{k}__{field}` for every field (K x F tables). The input KJT
carries a field once, but TorchRec copies its ids for each of the K tables that read it, then
permutes, bounds-checks and looks them up K times: K x B x F ids a step.

stacked: one table `stack__{field}` per field, of width sum_k D_k, student k's columns
[c_k, c_k + D_k) of it: one lookup of B x F ids serves all K, and the cut happens after
pooling. Each column is one student's (own uniform init, own gradient: a student's loss
reaches only its columns), so with elementwise sparse optimizers (SGD, Adam, exact Adagrad)
training equals K separate tables. Rowwise Adagrad keeps one accumulator per table row,
here shared by the K students' columns (each student's step size then depends on the others'
gradients): `auto` keeps it on separate tables. Column-wise sharding spreads the students of
a field over devices.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torchrec import EmbeddingBagConfig, PoolingType

from recsys_kdef.data.schema import Schema
from recsys_kdef.models.sparse import build_embedding_tables, table_features


def stacked_table_name(field: str) -> str:
    return f"stack__{field}"


def build_stacked_tables(
    schema: Schema, dims: list[int], init_range: float
) -> list[EmbeddingBagConfig]:
    """F table configs, field f's of width sum(dims): student k's columns follow student k-1's."""
    return [
        EmbeddingBagConfig(
            name=stacked_table_name(f.name),
            embedding_dim=sum(dims),
            num_embeddings=f.vocab_size,
            feature_names=table_features(schema, f.name),
            pooling=PoolingType.MEAN if f.pooling == "mean" else PoolingType.SUM,
            weight_init_min=-init_range,
            weight_init_max=init_range,
        )
        for f in schema.sparse
        if f.sequence_of is None
    ]


def build_tables(
    schema: Schema, dims: list[int], mode: str, layout: str, init_range: float
) -> list[EmbeddingBagConfig]:
    """The collection's tables: per_model separate (K x F), per_model stacked (F), shared (F)."""
    if mode == "per_model" and layout == "stacked":
        return build_stacked_tables(schema, dims, init_range)
    return build_embedding_tables(schema, dims, mode, init_range)  # type: ignore[arg-type]


class GroupSplit(nn.Module):
    """Cuts the sparse arch's (B, T) output into one (n_in, B, Nf, D_g) tensor per student group.

    groups: (n students, D_g) per group, in student order; n_in = n (per-model tables) or 1
    (shared tables). separate: T = K x Nf x D, student-major; stacked: T = Nf x sum_k D_k,
    feature-major, so a group's students are a column range of each feature's block.

    Example::

        split = GroupSplit([(4, 16)], num_features=39, mode="per_model", layout="stacked")
        (x,) = split(emb)  # emb (B, 39 * 64) -> x (4, B, 39, 16)
    """

    def __init__(
        self, groups: list[tuple[int, int]], num_features: int, mode: str, layout: str
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.shared = mode != "per_model"
        self.stacked = not self.shared and layout == "stacked"
        self.width = sum(n * d for n, d in groups)  # stacked: a feature's block
        self._slices, start = [], 0  # per group: (first column, n_in, D)
        for n, d in groups:
            if self.shared:
                self._slices.append((0, 1, d))
            else:
                self._slices.append((start, n, d))
                start += n * d if self.stacked else n * num_features * d

    def forward(self, emb: torch.Tensor) -> list[torch.Tensor]:
        batch, f = emb.shape[0], self.num_features
        if self.stacked:
            if len(self._slices) == 1:  # one group: one view, (B, Nf, n, D)
                _, n, d = self._slices[0]
                return [emb.view(batch, f, n, d).permute(2, 0, 1, 3)]
            blocks = emb.view(batch, f, self.width)  # (B, Nf, sum_k D_k)
            return [
                blocks[:, :, s : s + n * d].unflatten(2, (n, d)).permute(2, 0, 1, 3)
                for s, n, d in self._slices
            ]  # each (n, B, Nf, D)
        return [
            emb[:, s : s + n * f * d].view(batch, n, f, d).transpose(0, 1)
            for s, n, d in self._slices
        ]  # each (n_in, B, Nf, D)


_SEPARATE = re.compile(r"^(?P<prefix>.*\.embedding_bags\.)s(?P<k>\d+)__(?P<field>.+)\.weight$")


def stack_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full (unsharded) state dict of separate per-model tables with the tables stacked:
    `s{k}__{field}` (V, D_k) for k = 0..K-1 -> `stack__{field}` (V, sum_k D_k); the rest as is.
    What converts a separate-layout checkpoint's weights for a stacked model."""
    out, tables = {}, {}
    for name, value in state.items():
        m = _SEPARATE.match(name)
        if m is None:
            out[name] = value
        else:
            key = f"{m['prefix']}{stacked_table_name(m['field'])}.weight"
            tables.setdefault(key, {})[int(m["k"])] = value
    for key, per_student in tables.items():
        out[key] = torch.cat([per_student[k] for k in sorted(per_student)], dim=1)
    return out


_STACKED = re.compile(r"^(?P<prefix>.*\.embedding_bags\.)stack__(?P<field>.+)\.weight$")


def unstack_state_dict(state: dict[str, torch.Tensor], dims: list[int]) -> dict[str, torch.Tensor]:
    """The inverse of stack_state_dict: `stack__{field}` (V, sum_k D_k) -> `s{k}__{field}`
    (V, D_k), student k's columns (views); the rest as is."""
    out = {}
    for name, value in state.items():
        m = _STACKED.match(name)
        if m is None:
            out[name] = value
            continue
        start = 0
        for k, d in enumerate(dims):
            out[f"{m['prefix']}s{k}__{m['field']}.weight"] = value[:, start : start + d]
            start += d
    return out
