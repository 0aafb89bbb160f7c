"""The ensemble of K students: sparse arch -> student towers -> logits, hidden vectors, teacher.

Single-device model code: it takes built submodules and knows nothing of process groups;
recsys_kdef.distributed shards it.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_kdef.config import ModelConfig
from recsys_kdef.data.schema import Schema
from recsys_kdef.models.fusion import HiddenFusion
from recsys_kdef.models.outputs import EnsembleOutput
from recsys_kdef.models.sparse import SequenceCut, SparseArch
from recsys_kdef.models.students import StudentTowers, build_student_towers, student_groups
from recsys_kdef.models.table_layout import GroupSplit, build_tables


class EnsembleModel(nn.Module):
    """K students over per-model or shared embeddings.

    The sparse arch's (B, T) output is cut into one (n_in, B, F, D_g) tensor per student group
    (n_in = the group's n students with per-model tables, 1 with shared ones); the groups
    compute logits (K, B) and hidden vectors (K, B, H). With behaviour sequences in the schema,
    `cut` pools each sequence into its field and also gives the sequences (n_in, B, S, L, D_g)
    and their mask (B, S, L), which groups that read sequences receive.

    Example::

        model = build_model(cfg.model, schema, device=torch.device("cpu"))
        out = model(batch.dense, batch.sparse)  # out.logits (B, K), out.hidden (B, K, H)
    """

    def __init__(
        self,
        sparse_arch: SparseArch,
        towers: StudentTowers,
        split: GroupSplit,
        fusion: nn.Module | None = None,
        cut: SequenceCut | None = None,
    ) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.towers = towers
        self.fusion = fusion
        self.cut = cut
        self.split = split

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> EnsembleOutput:
        emb = self.sparse_arch(sparse)  # (B, T)
        per_group = self.split(emb)  # each (n_in, B, Nf, D): the features of the students' tables
        sequences = None
        if self.cut is not None and self.cut.num_sequences:
            mask = self.cut.mask(sparse)  # (B, S, L)
            cuts = [self.cut(x, mask) for x in per_group]
            per_group = [fields for fields, _ in cuts]  # each (n_in, B, F, D)
            sequences = [(seq, mask) for _, seq in cuts]  # (n_in, B, S, L, D), (B, S, L)
        logits, hidden, aux = self.towers(per_group, dense, sequences)  # (K, B), (K, B, H), (K,)
        out = EnsembleOutput(
            logits=logits.t(), hidden=hidden.transpose(0, 1), embeddings=emb, aux_loss=aux
        )
        if self.fusion is not None:
            out.fused_logit, out.fusion_weights = self.fusion(out.logits, out.hidden)
        return out


def build_model(
    cfg: ModelConfig, schema: Schema, device: torch.device | None = None
) -> EnsembleModel:
    """The ensemble for `schema`; tables go on `device` (default `meta`: the planner places them)."""
    groups = student_groups(cfg)
    dims = [g.embedding_dim for g in groups for _ in range(g.count)]
    # model.table_layout auto is resolved with the sparse optimizer (ExperimentConfig); a
    # ModelConfig on its own keeps the separate tables
    layout = "separate" if cfg.table_layout == "auto" else cfg.table_layout
    tables = build_tables(schema, dims, cfg.embedding_mode, layout, cfg.embedding_init_range)
    ebc = EmbeddingBagCollection(tables=tables, device=device or torch.device("meta"))
    cut = SequenceCut(schema)
    # per student: the features of its tables (cut.num_features)
    split = GroupSplit(
        [(g.count, g.embedding_dim) for g in groups], cut.num_features, cfg.embedding_mode, layout
    )
    towers = build_student_towers(cfg, schema)
    fusion = None
    if cfg.fusion.name != "none":
        fusion = HiddenFusion.named(
            cfg.fusion.name, cfg.num_students, towers.output_dim, cfg.fusion.stop_gradient
        )
    return EnsembleModel(SparseArch(ebc), towers, split, fusion, cut if schema.sequences else None)
