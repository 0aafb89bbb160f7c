"""KDEF: students learn from labels, from the ensemble teacher (KD) and from each other (DML),
with loss weights set by an examination of each student (docs/papers.md §4, the authors' EKTF code).

With p_k = sigmoid(logit_k), teacher y_t = sigmoid(mean_k logit_k) (mean of LOGITS):
    ctr_k = BCE(p_k, y)              kd_k = C(p_k, stopgrad(y_t))
    S_k   = mean_i (1 - |y_i - p_k,i|)   (exam score, higher is better, not detached)
    lambda = softmin(S)              KD term  = sum_k lambda_k kd_k
    mu_k,l = softmax_{l != k}(S_l - S_k)
    DML term = mean_k sum_{l != k} mu_k,l C(p_k, stopgrad(p_l))     (none when K = 1)
    L = mean_k ctr_k + KD term + DML term
C is the consistency loss (MSE in the paper's main results). All K students and all
K x K pairs are computed at once with tensor ops, and the gradient in closed form
(_KDEFLoss): ~55 ops a step where autograd through the formulas took ~120.

Variants (the paper's Table V / Fig. 10): `only_kd`, `only_dml`, `no_exam` (lambda = mu = 1);
"without all" is the `mean` objective. C can be mse, huber, kl or bce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from recsys_kdef.models.outputs import EnsembleOutput
from recsys_kdef.objectives.base import ObjectiveOutput

Variant = Literal["full", "only_kd", "only_dml", "no_exam"]


def _entropy(q: torch.Tensor) -> torch.Tensor:
    return -(torch.xlogy(q, q) + torch.xlogy(1 - q, 1 - q))


@dataclass(frozen=True)
class Consistency:
    """C(z, q): a student's (logit z, p = sigmoid(z)) consistency with a detached target
    probability q. Each is a(z) - q b(z) + c(q), so the K x K pairs' batch means are one matmul
    (no (B, K, K) tensor), and dC/dz = scale (p - q) [p (1 - p) where `through_p`].
    Huber (delta 1) is half the MSE: |p - q| <= 1 never reaches its linear part."""

    name: str
    scale: float
    through_p: bool

    def value(self, z: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """C elementwise; q broadcasts against z."""
        if self.through_p:
            return (p - q).square_().mul_(self.scale / 2) if self.scale != 2 else (p - q).square_()
        bce = F.binary_cross_entropy_with_logits(z, q.expand_as(z), reduction="none")
        return bce - _entropy(q) if self.name == "kl" else bce  # KL(q || p) = BCE - H(q)

    def pairs(self, z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """(K, K): [k, l] = mean over the batch of C(z_k, p_l), for z, p (B, K)."""
        n = z.shape[0]
        if self.through_p:  # (scale / 2) (E p_k^2 + E p_l^2 - 2 E p_k p_l)
            m2 = p.square().mean(dim=0)
            half = self.scale / 2
            return torch.addmm(m2.unsqueeze(1) + m2, p.t(), p, beta=half, alpha=-2 * half / n)
        own = F.softplus(z).mean(dim=0).unsqueeze(1)  # E softplus(z_k), then - E p_l z_k
        if self.name == "kl":
            own = own - _entropy(p).mean(dim=0)
        return torch.addmm(own, z.t(), p, alpha=-1 / n)


CONSISTENCY: dict[str, Consistency] = {
    "mse": Consistency("mse", 2.0, True),
    "huber": Consistency("huber", 1.0, True),
    "bce": Consistency("bce", 1.0, False),
    "kl": Consistency("kl", 1.0, False),
}


class _KDEFLoss(torch.autograd.Function):
    """The KDEF loss of logits (B, K) and labels (B,), and its gradient in closed form.

    With d = p - y, miss_k = mean_b |d_bk| = 1 - S_k (lambda = softmax(miss), the rows of mu
    softmax(miss_k - miss_l) off the diagonal), pair = the (K, K) consistencies, rows_k =
    sum_l mu_kl pair_kl, the gradient is, per element,
        dL/dz = [d / K + C'(lambda_k (p - t) + (m_k p - (p mu^T)) / K) + s_k sign(d) p (1 - p)] / B
    with m_k = sum_l mu_kl, C' the consistency's dC/dz per (p - q) and, where the exam carries a
    gradient, s = dL/dmiss = lambda (kd - lambda . kd) - colsum(mu * (pair - rows)) / K.

    Returns the loss and, detached, its parts: ctr, KD term, DML term, exam S, lambda, mu
    (None where the variant has no such part).
    """

    @staticmethod
    def forward(
        ctx, logits, labels, cons: Consistency, kd: bool, dml: bool, examined: bool, exam_grad: bool
    ):
        z = logits
        n, k = z.shape
        with torch.autocast(z.device.type, enabled=False):
            p = torch.sigmoid(z)
            y = labels.unsqueeze(1).to(z.dtype)
            d = p - y  # (B, K)
            ctr = F.binary_cross_entropy_with_logits(z, y.expand_as(z))  # mean_k ctr_k
            miss = d.abs().mean(dim=0)  # (K,) = 1 - S
            # the loss must not be the (non-differentiable) ctr part itself
            loss = ctr if kd or dml else ctr.clone()
            kd_term = dml_term = lam = mu = None
            t = per_kd = pair = rows = None
            if kd:
                t = torch.sigmoid(z.mean(dim=1)).unsqueeze(1)  # (B, 1) the teacher
                per_kd = cons.value(z, p, t).mean(dim=0)  # (K,)
                if examined:
                    lam = torch.softmax(miss, dim=0)  # softmin(S): the shift by 1 cancels
                    kd_term = torch.dot(lam, per_kd)
                else:
                    lam, kd_term = torch.ones_like(per_kd), per_kd.sum()
                loss = loss + kd_term
            if dml:
                pair = cons.pairs(z, p)  # (K, K)
                eye = torch.eye(k, dtype=torch.bool, device=z.device)
                if examined:  # S_l - S_k = miss_k - miss_l
                    mu = torch.softmax(
                        (miss.unsqueeze(1) - miss).masked_fill(eye, float("-inf")), 1
                    )
                else:
                    mu = (~eye).to(z.dtype)
                rows = (mu * pair).sum(dim=1)
                dml_term = rows.mean()
                loss = loss + dml_term
        ctx.save_for_backward(p, d, t, lam, per_kd, mu, pair, rows)
        ctx.cons, ctx.exam_grad, ctx.examined = cons, exam_grad and (kd or dml), examined
        ctx.set_materialize_grads(False)  # the parts get no gradient: no zeros for them
        parts = [ctr, kd_term, dml_term, 1 - miss, lam, mu]
        ctx.mark_non_differentiable(*(x for x in parts if x is not None))
        return (loss, *parts)

    @staticmethod
    def backward(ctx, g, *_):
        p, d, t, lam, per_kd, mu, pair, rows = ctx.saved_tensors
        cons = ctx.cons
        n, k = p.shape
        with torch.autocast(p.device.type, enabled=False):
            # the consistency terms' pull: C' (p c - target), c_k = lambda_k + m_k / K
            target, c = None, None
            if t is not None:
                target, c = t * lam, lam
            if mu is not None:
                m = 1 if ctx.examined else k - 1  # sum_l mu_kl
                c = m / k if c is None else c + m / k
                target = (
                    (p @ mu.t()) / k
                    if target is None
                    else torch.addmm(target, p, mu.t(), alpha=1 / k)
                )
            s = None
            if ctx.exam_grad:  # dL/dmiss
                if lam is not None:
                    s = lam * (per_kd - torch.dot(lam, per_kd))
                if mu is not None:
                    r = (mu * (pair - rows.unsqueeze(1))).sum(dim=0)
                    s = -r / k if s is None else torch.sub(s, r, alpha=1 / k)
            grad = d  # K B dL/dz = d + K (the consistency terms + the exam's)
            if c is not None:
                if isinstance(c, torch.Tensor):
                    pull = torch.addcmul(target, p, c, value=-1)  # -(p c - target)
                else:  # DML alone: c = m / K
                    pull = torch.sub(target, p, alpha=c)
                if s is not None and cons.through_p:
                    pull = torch.addcmul(pull, torch.sign(d), s, value=-1 / cons.scale)
                if cons.through_p:
                    pull = torch.ops.aten.sigmoid_backward(pull, p)  # times p (1 - p)
                grad = torch.sub(d, pull, alpha=k * cons.scale)
                if s is not None and not cons.through_p:
                    exam = torch.ops.aten.sigmoid_backward(torch.sign(d) * s, p)
                    grad = grad.add_(exam, alpha=k)
            grad = grad * (g / (n * k))
        return grad, None, None, None, None, None, None


class KDEFObjective(nn.Module):
    """The KDEF loss over K students; see the module docstring for the equations."""

    def __init__(
        self,
        variant: Variant = "full",
        consistency: str = "mse",
        detach_exam: bool = False,
        label_flip_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if consistency not in CONSISTENCY:
            raise ValueError(f"consistency {consistency!r}; choose one of {list(CONSISTENCY)}")
        self.variant = variant
        self.consistency = CONSISTENCY[consistency]
        self.detach_exam = detach_exam
        self.label_flip_rate = label_flip_rate

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> KDEFObjective:
        k = cfg.kdef
        return cls(k.variant, k.consistency, k.detach_exam, k.label_flip_rate)

    def forward(self, output: EnsembleOutput, labels: torch.Tensor) -> ObjectiveOutput:
        if self.training and self.label_flip_rate > 0:  # EKTF.py's `threshold` label noise
            flips = torch.rand_like(labels) < self.label_flip_rate
            labels = torch.where(flips, 1 - labels, labels)
        variant, logits = self.variant, output.logits  # (B, K)
        kd = variant in ("full", "only_kd", "no_exam")
        dml = variant in ("full", "only_dml", "no_exam") and logits.shape[1] > 1
        examined = variant != "no_exam"
        loss, ctr, kd_term, dml_term, exam, lam, mu = _KDEFLoss.apply(
            logits, labels, self.consistency, kd, dml, examined, examined and not self.detach_exam
        )
        components, weights = {"ctr": ctr}, {"exam": exam}
        if kd:
            components["kd"], weights["lambda"] = kd_term, lam
        if dml:
            components["dml"], weights["mu"] = dml_term, mu
        return ObjectiveOutput(loss=loss, components=components, weights=weights)
