"""The module that is sharded and trained: model + objective, batch in, loss out."""

from __future__ import annotations

import torch
from torch import nn

from recsys_kdef.data.batch import Batch
from recsys_kdef.models.fusion import HiddenFusion
from recsys_kdef.models.outputs import DistillOutput, EnsembleOutput
from recsys_kdef.models.students import StudentTowers
from recsys_kdef.objectives.base import ObjectiveOutput


class EnsembleTrain(nn.Module):
    """Runs the ensemble and its objective on a Batch, plus the optional embedding L2 term.

    l2_mode "batch_rows": loss = objective + l2 * mean_b sum(e_b^2), e_b the pooled embeddings
    row b reads. "whole_table": loss = objective + (l2 / 2) * sum ||E||^2 over every trainable
    table weight (FuxiCTR's embedding_regularizer); the tables must be dense parameters
    (unsharded, or data_parallel), which shard_model arranges. "decoupled" adds no term: the
    trainer decays whole tables after each step (recsys_kdef.training.table_decay). The L2 term lives here rather
    than in the sparse optimizer because fbgemm's CPU kernels ignore weight decay.

    Students with an auxiliary loss of their own (DIEN's, `EnsembleOutput.aux_loss` (K,)) add
    aux_loss_weight * reduce_k(aux_k) to every objective, reduced like the objective's per-student
    BCE terms (its `student_reduction`: mean, or sum for cetnet), so a DIEN student's ratio of
    BCE to auxiliary loss is FuxiCTR's (BCE + aux_loss_alpha * L_aux).

    Returns (loss, (objective_output, model_output)), the shape TorchRec's train pipelines
    expect (loss first). Objectives with parameters (e.g. a gating network) live here too,
    so they are trained and made data-parallel with the towers.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: nn.Module,
        embedding_l2: float = 0.0,
        l2_mode: str = "batch_rows",
        aux_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.embedding_l2 = embedding_l2
        self.l2_mode = l2_mode
        self.aux_loss_weight = aux_loss_weight
        # decided once, not per batch: TorchRec's pipeline traces forward with proxies (fx)
        self._has_aux = aux_loss_weight != 0 and any(
            getattr(m, "has_aux_loss", False) for m in model.modules()
        )

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[ObjectiveOutput, EnsembleOutput]]:
        output = self.model(batch.dense, batch.sparse)
        result = self.objective(output, batch.labels)
        loss = result.loss
        penalty = self.l2_penalty(output) if self.embedding_l2 > 0 else None
        if penalty is not None:
            loss = loss + self.embedding_l2 * penalty
            result.components["l2"] = penalty.detach()
        aux = self.auxiliary_loss(output)
        if aux is not None:
            loss = loss + self.aux_loss_weight * aux
            result.components["aux"] = aux.detach()
        return loss, (result, output)

    def auxiliary_loss(self, output: EnsembleOutput | DistillOutput) -> torch.Tensor | None:
        """The students' auxiliary losses (K,) reduced as the objective reduces its per-student
        terms (None: no student has one, or aux_loss_weight is 0)."""
        student = output.student if isinstance(output, DistillOutput) else output
        if not self._has_aux:
            return None
        if getattr(self.objective, "student_reduction", "mean") == "sum":
            return student.aux_loss.sum()
        return student.aux_loss.mean()

    def compile_dense(self) -> None:
        """torch.compile, in place, every student group, fusion and the objective (compiled
        lazily at their first call; parameter names and checkpoints are unchanged). The
        embedding collections stay eager: the planner shards them and their kernels are fbgemm's."""
        for module in self.modules():
            if isinstance(module, (StudentTowers, HiddenFusion)):
                module.compile()
        self.objective.compile()

    def l2_penalty(self, output: EnsembleOutput) -> torch.Tensor | None:
        """What embedding_l2 multiplies: half the whole tables' squared norm, or the mean
        squared norm of the pooled embeddings a row reads (None if the model has none)."""
        if self.l2_mode == "decoupled":  # a decay after the step (recsys_kdef.training.table_decay)
            return None
        if self.l2_mode == "whole_table":
            return sum(w.pow(2).sum() for w in self.table_weights()) / 2
        if output.embeddings is None:
            return None
        return output.embeddings.pow(2).sum(dim=1).mean()

    def table_weights(self) -> list[torch.Tensor]:
        """The trainable embedding tables as dense parameters (unsharded or data_parallel)."""
        weights = []
        for name, w in self.model.named_parameters():
            if ".embedding_bags." not in name or not w.requires_grad:
                continue
            if hasattr(w, "_in_backward_optimizers"):  # updated inside a fused backward kernel
                raise ValueError(
                    f"train.embedding_l2_mode = whole_table needs dense tables; {name} is sharded "
                    "with a fused kernel (keep the tables data_parallel)"
                )
            weights.append(w)
        return weights
