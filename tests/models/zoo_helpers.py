"""Planted signals and a small single-device fit loop for testing zoo architectures.

The architecture under test gets its embeddings from plain nn.Embedding tables (no TorchRec:
the arch is what is tested); `fit` trains one student group with Adam and returns its test
AUC next to the Bayes-optimal AUC of the planted signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys_kdef.eval.grouped_auc import grouped_auc
from recsys_kdef.models.zoo import build_student_group
from recsys_kdef.models.zoo.base import StudentInputs


@dataclass
class Planted:
    """ids (N, F) long, dense (N, Dd), labels (N,), prob (N,) the true click probability."""

    ids: torch.Tensor
    dense: torch.Tensor
    labels: torch.Tensor
    prob: torch.Tensor
    vocab: int

    def split(self, n_train: int) -> tuple[Planted, Planted]:
        def part(sl):
            return Planted(self.ids[sl], self.dense[sl], self.labels[sl], self.prob[sl], self.vocab)

        return part(slice(0, n_train)), part(slice(n_train, None))


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact ROC AUC (ties count 1/2): the project's exact per-group AUC over one group."""
    auc_sum, count = grouped_auc(torch.zeros(len(scores)), scores.double()[:, None], labels)
    return float(auc_sum[0] / count[0])


def three_way(n: int = 60_000, vocab: int = 12, fields: int = 3, seed: int = 0) -> Planted:
    """A multiplicative 3-way interaction of three numeric features: logit = 2 * x0 * x1 * x2,
    x ~ N(0, 1); the `fields` sparse fields (ids uniform over `vocab`) carry a small additive
    effect. A ReLU MLP can only approximate the product; cross layers express it exactly."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, fields), generator=g)
    effects = 0.3 * torch.randn(fields, vocab, generator=g)
    dense = torch.randn(n, 3, generator=g)
    logit = 2.0 * dense.prod(dim=1) + effects.gather(1, ids.t()).sum(dim=0)
    prob = torch.sigmoid(logit)
    labels = torch.bernoulli(prob, generator=g)
    return Planted(ids, dense, labels, prob, vocab)


class LookupAndStudents(nn.Module):
    """nn.Embedding per field -> one student group: ids (B, F), dense (B, Dd) -> logits (n, B)."""

    def __init__(self, group: nn.Module, fields: int, vocab: int, dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(vocab, dim) for _ in range(fields))
        for t in self.tables:
            nn.init.uniform_(t.weight, -0.05, 0.05)
        self.group = group

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        emb = torch.stack([t(ids[:, f]) for f, t in enumerate(self.tables)], dim=1)  # (B, F, D)
        logits, _ = self.group(emb.unsqueeze(0), dense)
        return logits


def build(arch: str, params: dict, data: Planted, dim: int = 8, count: int = 1) -> nn.Module:
    """The student group behind its own lookup, initialised from seed 0 (not from whatever the
    global RNG holds after the tests and imports before it)."""
    torch.manual_seed(0)
    inputs = StudentInputs(data.ids.shape[1], data.dense.shape[1], dim)
    group = build_student_group(arch, params, inputs, count, f"test {arch}")
    return LookupAndStudents(group, data.ids.shape[1], data.vocab, dim)


def fit(
    model: LookupAndStudents,
    data: Planted,
    n_train: int,
    epochs: int = 3,
    batch: int = 512,
    lr: float = 3e-3,
    seed: int = 0,
) -> tuple[float, float]:
    """Train with Adam on the first n_train rows, adding the students' auxiliary losses where
    the model has them; (test AUC of student 0, Bayes-optimal AUC). One thread: these small
    models gain nothing from more, and the AUC then does not depend on the core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(model, data, n_train, epochs, batch, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _fit(model, data, n_train, epochs, batch, lr, seed) -> tuple[float, float]:
    torch.manual_seed(seed)
    train, test = data.split(n_train)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n_train, generator=g)
        for i in range(0, n_train, batch):
            idx = perm[i : i + batch]
            logits = model(train.ids[idx], train.dense[idx])  # (n, B)
            loss = loss_fn(logits, train.labels[idx].expand_as(logits))
            aux = getattr(model, "aux_loss", None)  # a student's auxiliary loss (DIEN's)
            if aux is not None:
                loss = loss + aux
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        scores = model(test.ids, test.dense)[0]
    return auc(scores, test.labels), auc(test.prob, test.labels)


def tower_params(model: nn.Module) -> int:
    """Parameters of the student group (not the embedding tables), per student."""
    group = model.group
    return sum(p.numel() for p in group.parameters()) // group.num_students


def mlp_params(hidden: list[int], in_dim: int) -> int:
    """Parameters of an MLP student (no batch norm): the layers and the output layer."""
    sizes = [in_dim, *hidden, 1]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def equal_param_mlp(target: int, data: Planted, dim: int = 8) -> list[int]:
    """Two equal hidden layers [h, h] whose MLP has as close to `target` parameters as can be."""
    in_dim = data.ids.shape[1] * dim + data.dense.shape[1]
    return [min(range(1, 2048), key=lambda h: abs(mlp_params([h, h], in_dim) - target))] * 2


PLAIN_MLP = {"batch_norm": False, "net_dropout": 0.0}


def two_way(n: int = 30_000, vocab: int = 40, fields: int = 3, seed: int = 0) -> Planted:
    """A multiplicative 2-way interaction of sparse fields 0 and 1: logit = 2.5 * u[id0] * w[id1],
    u, w ~ N(0, 1) per id, centred (no marginal effect a linear model could use); every sparse
    field and the 2 numeric features add a small additive effect. A factorisation (FM, inner
    products) expresses it with one embedding dimension; a linear model cannot."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, fields), generator=g)
    u, w = torch.randn(2, vocab, generator=g)
    u, w = (u - u.mean()) / u.std(), (w - w.mean()) / w.std()
    effects = 0.3 * torch.randn(fields, vocab, generator=g)
    dense = torch.randn(n, 2, generator=g)
    logit = 2.5 * u[ids[:, 0]] * w[ids[:, 1]] + effects.gather(1, ids.t()).sum(dim=0)
    logit = logit + 0.3 * dense.sum(dim=1)
    prob = torch.sigmoid(logit)
    labels = torch.bernoulli(prob, generator=g)
    return Planted(ids, dense, labels, prob, vocab)


class LogisticRegression(nn.Module):
    """The pure linear model: a weight per id of each field, per numeric feature and a bias;
    ids (B, F), dense (B, Dd) -> logits (1, B) (fits `fit`)."""

    def __init__(self, data: Planted) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(data.vocab, 1) for _ in range(data.ids.shape[1]))
        for t in self.tables:
            nn.init.zeros_(t.weight)
        self.numeric = nn.Linear(data.dense.shape[1], 1)

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        logit = sum(t(ids[:, f]).squeeze(1) for f, t in enumerate(self.tables))
        return (logit + self.numeric(dense).squeeze(1)).unsqueeze(0)  # (1, B)


def fuxictr_mlp_block_params(
    in_dim: int, hidden: list[int], batch_norm: bool, output_dim: int | None = 1
) -> int:
    """Parameters of FuxiCTR's MLP_Block: Linear [+ BatchNorm1d] per hidden layer, then
    Linear(., output_dim) unless output_dim is None."""
    sizes = [in_dim, *hidden] + ([output_dim] if output_dim is not None else [])
    return sum(a * b + b for a, b in zip(sizes, sizes[1:])) + (2 * sum(hidden) if batch_norm else 0)


def behaviour(n: int = 30_000, vocab: int = 256, max_len: int = 10, seed: int = 0) -> Planted:
    """The planted target-attention signal of recsys_kdef.data.synthetic.sample_behaviour: the
    click logit is 0.8 x how many of the last `max_len` history items are in the target's
    category (32 hidden categories). ids (N, 1 + 2L) pack [target, history (L, -1 past its
    end), mask (L)]; no dense features. A mean of the history keeps shares, not counts (and
    32 categories' shares poorly in D = 8); unnormalised attention sums the matching items."""
    import numpy as np

    from recsys_kdef.data.synthetic import SEQUENCE_SCALE, sample_behaviour

    rng = np.random.default_rng(seed)
    b = sample_behaviour(n, vocab, max_len, rng)
    kept = np.minimum(b.lengths, max_len)
    first = np.cumsum(b.lengths) - kept
    pos = np.arange(max_len)
    mask = pos[None, :] < kept[:, None]  # (N, L), the last ids left-aligned
    hist = np.where(mask, b.history[np.minimum(first[:, None] + pos, b.history.size - 1)], -1)
    logit = SEQUENCE_SCALE * (b.match - b.match.mean()) - 1.0
    prob = torch.sigmoid(torch.from_numpy(logit)).float()
    labels = torch.bernoulli(prob, generator=torch.Generator().manual_seed(seed))
    ids = np.concatenate([b.target[:, None], hist, mask], axis=1)
    return Planted(torch.from_numpy(ids).long(), torch.zeros(n, 0), labels, prob, vocab)


class SequenceLookup(nn.Module):
    """One nn.Embedding for the target and its history -> one group: fields (B, 2, D) = [target,
    mean of the history]; groups that read sequences also get (B, 1, L, D) and mask (B, 1, L).
    `aux_loss` holds the last forward's summed auxiliary losses (None for groups without)."""

    def __init__(self, group: nn.Module, vocab: int, dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, dim)
        nn.init.uniform_(self.table.weight, -0.05, 0.05)
        self.group = group

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        length = (ids.shape[1] - 1) // 2
        mask = ids[:, 1 + length :].bool()  # (B, L)
        seq = self.table(ids[:, 1 : 1 + length].clamp(min=0)) * mask.unsqueeze(-1)  # (B, L, D)
        pooled = seq.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # (B, D)
        fields = torch.stack([self.table(ids[:, 0]), pooled], dim=1).unsqueeze(0)  # (1, B, 2, D)
        if getattr(self.group, "reads_sequence", False):
            out = self.group(fields, dense, seq[None, :, None], mask[:, None])
        else:
            out = self.group(fields, dense)
        self.aux_loss = out[2].sum() if len(out) > 2 else None
        return out[0]


def build_sequence(arch: str, params: dict, data: Planted, dim: int = 8) -> SequenceLookup:
    """As build, for a student reading the target and its behaviour sequence."""
    torch.manual_seed(0)
    inputs = StudentInputs(2, 0, dim, sequences=((1, 0),))
    group = build_student_group(arch, params, inputs, 1, f"test {arch}")
    return SequenceLookup(group, data.vocab, dim)


def against_equal_mlp(
    arch: str, params: dict, data: Planted, n_train: int = 20_000, epochs: int = 4
) -> tuple[float, float, float]:
    """(arch's test AUC, the AUC of an MLP with as many parameters trained alike, Bayes AUC);
    both initialised from seed 0, so the result does not depend on the tests run before."""
    torch.manual_seed(0)
    model = build(arch, params, data)
    arch_auc, bayes = fit(model, data, n_train, epochs=epochs)
    torch.manual_seed(0)
    hidden = equal_param_mlp(tower_params(model), data)
    mlp = build("mlp", {"hidden_units": hidden, **PLAIN_MLP}, data)
    assert abs(tower_params(mlp) - tower_params(model)) < 0.05 * tower_params(model)
    mlp_auc, _ = fit(mlp, data, n_train, epochs=epochs)
    print(f"{arch} {params}: {arch_auc:.4f}; MLP {hidden}: {mlp_auc:.4f}; Bayes {bayes:.4f}")
    return arch_auc, mlp_auc, bayes
