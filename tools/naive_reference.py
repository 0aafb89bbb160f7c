"""The KDEF authors' way of computing a K-student step (their EKTF code on FuxiCTR): one shared
nn.Embedding per field, each student an nn.Sequential MLP (Linear, BatchNorm1d, ReLU, Dropout)
run in a Python loop, the KDEF loss, dense Adam over everything. The bench's reference row."""

from __future__ import annotations

import torch
from torch import nn

from recsys_kdef.data.batch import Batch
from recsys_kdef.data.schema import Schema
from recsys_kdef.models.outputs import EnsembleOutput
from recsys_kdef.objectives.kdef import KDEFObjective


def student_mlp(in_features: int, hidden: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d_in, d_out in zip([in_features, *hidden], hidden):
        layers += [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers, nn.Linear(hidden[-1], 1))


class NaiveEnsemble(nn.Module):
    """Shared embeddings (B, F * D) -> K MLPs one after another -> logits (B, K)."""

    def __init__(
        self, schema: Schema, k: int, dim: int, hidden: list[int], dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.names = schema.sparse_names
        self.embeddings = nn.ModuleList(nn.Embedding(f.vocab_size, dim) for f in schema.sparse)
        width = len(self.names) * dim
        self.students = nn.ModuleList(student_mlp(width, hidden, dropout) for _ in range(k))

    def forward(self, batch: Batch) -> torch.Tensor:
        ids = batch.sparse.to_dict()  # one id per row in the bench's batches
        emb = torch.cat([e(ids[n].values()) for e, n in zip(self.embeddings, self.names)], dim=1)
        return torch.cat([s(emb) for s in self.students], dim=1)  # (B, K)


class NaiveStep:
    """One training step of NaiveEnsemble with the KDEF loss and torch.optim.Adam."""

    def __init__(self, model: NaiveEnsemble, device: torch.device, lr: float = 1e-3) -> None:
        self.model = model.to(device)
        self.device = device
        self.objective = KDEFObjective()
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def __call__(self, batch: Batch) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        self.optimizer.zero_grad()
        logits = self.model(batch)
        hidden = logits.new_zeros(*logits.shape, 1)
        loss = self.objective(EnsembleOutput(logits, hidden), batch.labels).loss
        loss.backward()
        self.optimizer.step()
        return loss.detach()
