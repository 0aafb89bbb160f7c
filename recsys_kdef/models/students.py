"""The students of an ensemble as groups of identical architectures, and where each one sits.

A group is `count` students of one architecture, shape and embedding dimension, computed as
one batched call (BatchedMLP's bmm or a vmapped zoo architecture). Students are numbered
group after group; the objectives see them as one (B, K) set of logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recsys_kdef.config import ModelConfig, StudentSpec
from recsys_kdef.data.schema import Schema
from recsys_kdef.models.zoo import build_student_group
from recsys_kdef.models.zoo.base import StudentInputs


@dataclass(frozen=True)
class GroupLayout:
    """Students [first, first + count) of one architecture and embedding dimension."""

    spec: StudentSpec
    first: int
    embedding_dim: int

    @property
    def count(self) -> int:
        return self.spec.count


def student_groups(cfg: ModelConfig) -> list[GroupLayout]:
    """The groups `cfg` declares: `students`, or the shorthand (num_students MLPs of `tower`)."""
    specs = cfg.students
    if specs is None:
        t = cfg.tower
        params = dict(
            hidden_units=list(t.hidden_units),
            hidden_activations=t.activation,
            net_dropout=t.dropout,
            batch_norm=t.batch_norm,
        )
        specs = [StudentSpec(arch="mlp", count=cfg.num_students, params=params)]
    groups, first = [], 0
    for spec in specs:
        groups.append(GroupLayout(spec, first, spec.embedding_dim or cfg.embedding_dim))
        first += spec.count
    return groups


def locate_student(cfg: ModelConfig, k: int) -> tuple[int, int]:
    """(group index, index inside the group) of student k."""
    for g, group in enumerate(student_groups(cfg)):
        if group.first <= k < group.first + group.count:
            return g, k - group.first
    raise ValueError(f"student {k} does not exist: the ensemble has {cfg.num_students} students")


class StudentTowers(nn.Module):
    """Every group's towers: per-group embeddings -> logits (K, B), hidden (K, B, H_max).

    Hidden vectors of groups narrower than the widest are zero-padded to H_max, so fusion
    and hint distillation see one (K, B, H) tensor; a padded zero adds nothing to a
    concatenating readout.
    """

    def __init__(self, groups: list[nn.Module]) -> None:
        super().__init__()
        self.groups = nn.ModuleList(groups)
        self.num_students = sum(g.num_students for g in groups)
        self.output_dim = max(g.output_dim for g in groups)

    def forward(
        self,
        embeddings: list[torch.Tensor],
        dense: torch.Tensor,
        sequences: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per group (n_in, B, F, D) fields, (B, Dd) dense and, for groups that read them
        (`reads_sequence`), (n_in, B, S, L, D) sequences with their (B, S, L) mask. Returns
        logits (K, B), hidden (K, B, H_max) and each student's auxiliary loss (K,) (0 for those
        without one), or None when no group has one (`has_aux_loss`)."""
        logits, hidden, aux = [], [], []
        for i, (group, emb) in enumerate(zip(self.groups, embeddings)):
            if sequences is not None and getattr(group, "reads_sequence", False):
                lg, h, *extra = group(emb, dense, *sequences[i])
            else:
                lg, h, *extra = group(emb, dense)  # (n, B), (n, B, H_g) [, (n,)]
            logits.append(lg)
            pad = self.output_dim - h.shape[-1]
            hidden.append(F.pad(h, (0, pad)) if pad else h)  # a pad of 0 would copy h
            aux.append(extra[0] if extra else None)
        has_aux = any(getattr(g, "has_aux_loss", False) for g in self.groups)
        if len(self.groups) == 1:
            return logits[0], hidden[0], aux[0] if has_aux else None
        aux_loss = None
        if has_aux:  # zeros for the students without an auxiliary loss
            aux_loss = torch.cat(
                [a if a is not None else lg.new_zeros(lg.shape[0]) for a, lg in zip(aux, logits)]
            )
        return torch.cat(logits, dim=0), torch.cat(hidden, dim=0), aux_loss


def build_student_towers(cfg: ModelConfig, schema: Schema) -> StudentTowers:
    """The towers of every group `cfg` declares, for `schema`'s fields."""
    names = schema.sparse_names
    sequences = tuple((names.index(s.name), names.index(s.sequence_of)) for s in schema.sequences)
    groups = []
    for i, g in enumerate(student_groups(cfg)):
        inputs = StudentInputs(len(schema.sparse), len(schema.dense), g.embedding_dim, sequences)
        where = "model.tower" if cfg.students is None else f"model.students[{i}]"
        groups.append(build_student_group(g.spec.arch, g.spec.params, inputs, g.count, where))
    return StudentTowers(groups)
