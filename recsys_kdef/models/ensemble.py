"""The ensemble of K students: sparse arch -> student towers -> logits, hidden vectors, teacher.

Single-device model code: it takes built submodules and knows nothing of process groups;
recsys_kdef.distributed shards it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_kdef.config import ModelConfig
from recsys_kdef.data.schema import Schema
from recsys_kdef.models.fusion import HiddenFusion
from recsys_kdef.models.sparse import SparseArch, build_embedding_tables
from recsys_kdef.models.towers import build_towers


@dataclass
class EnsembleOutput:
    """What the students produce for a batch of B rows.

    logits: (B, K) each student's logit
    hidden: (B, K, H) each student's last hidden vector (input of its output layer)
    embeddings: (B, K_e, F * D) pooled embeddings the students read (K_e = 1 if shared)
    fused_logit: (B,) the fusion module's prediction, if the model has one
    fusion_weights: (B, K) the fusion's per-sample weights of the students
    """

    logits: torch.Tensor
    hidden: torch.Tensor
    embeddings: torch.Tensor | None = None
    fused_logit: torch.Tensor | None = None
    fusion_weights: torch.Tensor | None = None

    @property
    def teacher_logit(self) -> torch.Tensor:
        """(B,) the ensemble: mean of the students' logits (KDEF's abstract teacher)."""
        return self.logits.mean(dim=1)

    def heads(self) -> dict[str, torch.Tensor]:
        """Every prediction to evaluate, as (B,) logits: each student, the ensemble, the fusion."""
        heads = {f"student_{k}": self.logits[:, k] for k in range(self.logits.shape[1])}
        heads["ensemble"] = self.teacher_logit
        if self.fused_logit is not None:
            heads["fused"] = self.fused_logit
        return heads


class EnsembleModel(nn.Module):
    """K students over per-model or shared embeddings.

    Each student reads the concatenation of its pooled embeddings (F * D) and the dense
    features (Dd); per-model inputs are (K, B, F * D + Dd), a shared one (1, B, ...) that
    the towers broadcast.

    Example::

        model = build_model(cfg.model, schema, device=torch.device("cpu"))
        out = model(batch.dense, batch.sparse)  # out.logits (B, K), out.hidden (B, K, H)
    """

    def __init__(
        self, sparse_arch: SparseArch, towers: nn.Module, fusion: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.sparse_arch = sparse_arch
        self.towers = towers
        self.fusion = fusion

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> EnsembleOutput:
        emb = self.sparse_arch(sparse)  # (B, K_e, F * D)
        batch, groups = emb.shape[0], emb.shape[1]
        x = torch.cat(
            [emb.transpose(0, 1), dense.unsqueeze(0).expand(groups, batch, dense.shape[1])], dim=2
        )  # (K_e, B, F * D + Dd)
        logits, hidden = self.towers(x)  # (K, B), (K, B, H)
        out = EnsembleOutput(logits=logits.t(), hidden=hidden.transpose(0, 1), embeddings=emb)
        if self.fusion is not None:
            out.fused_logit, out.fusion_weights = self.fusion(out.logits, out.hidden)
        return out


def build_model(
    cfg: ModelConfig, schema: Schema, device: torch.device | None = None
) -> EnsembleModel:
    """The ensemble for `schema`; tables go on `device` (default `meta`: the planner places them)."""
    tables = build_embedding_tables(
        schema, cfg.num_students, cfg.embedding_dim, cfg.embedding_mode, cfg.embedding_init_range
    )
    ebc = EmbeddingBagCollection(tables=tables, device=device or torch.device("meta"))
    groups = cfg.num_students if cfg.embedding_mode == "per_model" else 1
    in_features = len(schema.sparse) * cfg.embedding_dim + len(schema.dense)
    towers = build_towers(cfg.tower, cfg.num_students, in_features)
    fusion = None
    if cfg.fusion.name != "none":
        fusion = HiddenFusion.named(
            cfg.fusion.name, cfg.num_students, towers.output_dim, cfg.fusion.stop_gradient
        )
    return EnsembleModel(SparseArch(ebc, num_groups=groups), towers, fusion)
