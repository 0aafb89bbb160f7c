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
(_KDEFLoss): ~45 ops a step where autograd through the formulas took ~120.

Variants (the paper's Table V / Fig. 10): `only_kd`, `only_dml`, `no_exam` (lambda = mu = 1);
"without all" is the `mean` objective. C can be mse, huber, kl or bce.

Options beyond the paper (defaults give the authors' loss exactly): `kd_weight` and
`dml_weight` scale the two terms; `temperature` tau compares softened predictions,
tau^2 C(sigmoid(z_k / tau), sigmoid(z_t / tau)) (Hinton's soft targets, ECKD's tau), in both
terms; `exam_temperature` T sharpens the examination, lambda = softmin(S / T),
mu_k,l = softmax_{l != k}((S_l - S_k) / T) (S differs between students by ~1e-3, so at T = 1
lambda and mu are nearly uniform).
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


_EYES: dict[tuple[int, torch.device], torch.Tensor] = {}


def _eye(k: int, device: torch.device) -> torch.Tensor:
    """The (k, k) boolean identity on `device`, made once (a constant: no op a step); made
    afresh under torch.compile, whose traced tensors must not be kept."""
    if torch.compiler.is_compiling():
        return torch.eye(k, dtype=torch.bool, device=device)
    eye = _EYES.get((k, device))
    if eye is None:
        eye = _EYES[(k, device)] = torch.eye(k, dtype=torch.bool, device=device)
    return eye


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


@dataclass(frozen=True)
class Knobs:
    """The options beyond the paper's loss (all 1: the paper): term weights and temperatures."""

    kd_weight: float = 1.0
    dml_weight: float = 1.0
    temperature: float = 1.0
    exam_temperature: float = 1.0


def _scaled(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x if factor == 1.0 else x * factor  # no op dispatched for the paper's loss


class _KDEFLoss(torch.autograd.Function):
    """The KDEF loss of logits (B, K) and labels (B,), and its gradient in closed form.

    With d = p - y, miss_k = mean_b |d_bk| = 1 - S_k (lambda = softmax(miss / T), the rows of mu
    softmax((miss_k - miss_l) / T) off the diagonal), the consistencies taken on the softened
    q = sigmoid(z / tau) (kd_k against t = sigmoid(mean_k z_k / tau), pair = the (K, K) ones),
    rows_k = sum_l mu_kl pair_kl, weights a = kd_weight tau^2, b = dml_weight tau^2, the
    gradient is, per element,
        dL/dz = [d / K + C' tau (wk lambda_k (q - t) + wd (m_k q - (q mu^T)) / K)
                 + s_k sign(d) p (1 - p)] / B
    with wk = a / tau^2 = kd_weight, wd = dml_weight, m_k = sum_l mu_kl, C' the consistency's
    dC/dz per (q - target) and, where the exam carries a gradient,
    s = dL/dmiss = (a lambda (kd - lambda . kd) - b colsum(mu * (pair - rows)) / K) / T.

    Returns the loss and, detached, its parts: ctr, KD term, DML term, exam S, lambda, mu
    (None where the variant has no such part).
    """

    @staticmethod
    def forward(
        ctx,
        logits,
        labels,
        cons: Consistency,
        kd: bool,
        dml: bool,
        examined: bool,
        exam_grad: bool,
        knobs: Knobs,
    ):
        z = logits
        n, k = z.shape
        tau, inv_t = knobs.temperature, 1.0 / knobs.exam_temperature
        a, b = knobs.kd_weight * tau * tau, knobs.dml_weight * tau * tau
        with torch.autocast(z.device.type, enabled=False):
            p = torch.sigmoid(z)
            zq = _scaled(z, 1.0 / tau)  # the softened logits and probabilities of C
            q = p if tau == 1.0 else torch.sigmoid(zq)
            y = labels.unsqueeze(1).to(z.dtype)
            d = p - y  # (B, K)
            ctr = F.binary_cross_entropy_with_logits(z, y.expand_as(z))  # mean_k ctr_k
            miss = d.abs().mean(dim=0)  # (K,) = 1 - S
            # the loss must not be the (non-differentiable) ctr part itself
            loss = ctr if kd or dml else ctr.clone()
            kd_term = dml_term = lam = mu = None
            t = per_kd = kd_dot = weighted = rows = None
            if kd:
                t = torch.sigmoid(zq.mean(dim=1, keepdim=True))  # (B, 1) the teacher
                per_kd = cons.value(zq, q, t).mean(dim=0)  # (K,)
                if examined:
                    lam = torch.softmax(_scaled(miss, inv_t), dim=0)  # softmin(S / T)
                    kd_dot = torch.dot(lam, per_kd)  # the backward's lambda . kd too
                    kd_term = _scaled(kd_dot, a)
                else:
                    lam, kd_term = torch.ones_like(per_kd), _scaled(per_kd.sum(), a)
                loss = loss + kd_term
            if dml:
                pair = cons.pairs(zq, q)  # (K, K)
                eye = _eye(k, z.device)
                if examined:  # S_l - S_k = miss_k - miss_l
                    gap = _scaled(miss.unsqueeze(1) - miss, inv_t)
                    mu = torch.softmax(gap.masked_fill(eye, float("-inf")), 1)
                else:
                    mu = (~eye).to(z.dtype)
                weighted = mu * pair  # (K, K) mu_kl pair_kl
                rows = weighted.sum(dim=1)
                dml_term = _scaled(rows.mean(), b)
                loss = loss + dml_term
        saved = (p, q if tau != 1.0 else None, d, t, lam, per_kd, kd_dot, mu, weighted, rows)
        ctx.save_for_backward(*saved)
        ctx.cons, ctx.exam_grad, ctx.examined = cons, exam_grad and (kd or dml), examined
        ctx.knobs = knobs
        ctx.set_materialize_grads(False)  # the parts get no gradient: no zeros for them
        parts = [ctr, kd_term, dml_term, 1 - miss, lam, mu]
        ctx.mark_non_differentiable(*(x for x in parts if x is not None))
        return (loss, *parts)

    @staticmethod
    def backward(ctx, g, *_):
        p, q, d, t, lam, per_kd, kd_dot, mu, weighted, rows = ctx.saved_tensors
        cons, knobs = ctx.cons, ctx.knobs
        tau = knobs.temperature
        q = p if q is None else q
        n, k = p.shape
        wk, wd = knobs.kd_weight, knobs.dml_weight
        with torch.autocast(p.device.type, enabled=False):
            # the consistency terms' pull: C' (q c - target), c_k = wk lambda_k + wd m_k / K
            target, c, mu_t = None, None, None if mu is None else mu.t()
            if t is not None:
                c = _scaled(lam, wk)
                target = t * c
            if mu is not None:
                m = wd * (1 if ctx.examined else k - 1)  # wd sum_l mu_kl
                c = m / k if c is None else c + m / k
                target = (
                    (q @ mu_t) * (wd / k)
                    if target is None
                    else torch.addmm(target, q, mu_t, alpha=wd / k)
                )
            s = None
            if ctx.exam_grad:  # dL/dmiss, times T
                tt = tau * tau
                if lam is not None:  # examined, so the forward kept lambda . kd
                    s = _scaled(lam * (per_kd - kd_dot), wk * tt)
                if mu is not None:
                    # r_l = sum_k mu_kl (pair_kl - rows_k) = colsum(mu * pair) - (mu^T rows)_l
                    alpha = wd * tt / k
                    r = torch.addmv(weighted.sum(dim=0), mu_t, rows, alpha=-1)
                    s = r * -alpha if s is None else torch.sub(s, r, alpha=alpha)
                s = _scaled(s, 1.0 / knobs.exam_temperature)
            fused = tau == 1.0  # the exam's p (1 - p) is the consistency's q (1 - q)
            grad = d  # K B dL/dz = d + K (the consistency terms + the exam's)
            if c is not None:
                if isinstance(c, torch.Tensor):
                    pull = torch.addcmul(target, q, c, value=-1)  # -(q c - target)
                else:  # DML alone: c = wd m / K
                    pull = torch.sub(target, q, alpha=c)
                if s is not None and cons.through_p and fused:
                    pull = torch.addcmul(pull, torch.sign(d), s, value=-1 / cons.scale)
                if cons.through_p:
                    pull = torch.ops.aten.sigmoid_backward(pull, q)  # times q (1 - q)
                grad = torch.sub(d, pull, alpha=k * cons.scale * tau)
                if s is not None and not (cons.through_p and fused):
                    exam = torch.ops.aten.sigmoid_backward(torch.sign(d) * s, p)
                    grad = grad.add_(exam, alpha=k)
            grad = grad * (g / (n * k))
        return grad, None, None, None, None, None, None, None


class KDEFObjective(nn.Module):
    """The KDEF loss over K students; see the module docstring for the equations."""

    def __init__(
        self,
        variant: Variant = "full",
        consistency: str = "mse",
        detach_exam: bool = False,
        label_flip_rate: float = 0.0,
        *,
        kd_weight: float = 1.0,
        dml_weight: float = 1.0,
        temperature: float = 1.0,
        exam_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if consistency not in CONSISTENCY:
            raise ValueError(f"consistency {consistency!r}; choose one of {list(CONSISTENCY)}")
        self.variant = variant
        self.consistency = CONSISTENCY[consistency]
        self.detach_exam = detach_exam
        self.label_flip_rate = label_flip_rate
        self.knobs = Knobs(kd_weight, dml_weight, temperature, exam_temperature)

    @classmethod
    def from_config(cls, cfg, model: nn.Module) -> KDEFObjective:
        k = cfg.kdef
        return cls(
            k.variant,
            k.consistency,
            k.detach_exam,
            k.label_flip_rate,
            kd_weight=k.kd_weight,
            dml_weight=k.dml_weight,
            temperature=k.temperature,
            exam_temperature=k.exam_temperature,
        )

    def forward(self, output: EnsembleOutput, labels: torch.Tensor) -> ObjectiveOutput:
        if self.training and self.label_flip_rate > 0:  # EKTF.py's `threshold` label noise
            flips = torch.rand_like(labels) < self.label_flip_rate
            labels = torch.where(flips, 1 - labels, labels)
        variant, logits = self.variant, output.logits  # (B, K)
        kd = variant in ("full", "only_kd", "no_exam")
        dml = variant in ("full", "only_dml", "no_exam") and logits.shape[1] > 1
        examined = variant != "no_exam"
        loss, ctr, kd_term, dml_term, exam, lam, mu = _KDEFLoss.apply(
            logits,
            labels,
            self.consistency,
            kd,
            dml,
            examined,
            examined and not self.detach_exam,
            self.knobs,
        )
        components, weights = {"ctr": ctr}, {"exam": exam}
        if kd:
            components["kd"], weights["lambda"] = kd_term, lam
        if dml:
            components["dml"], weights["mu"] = dml_term, mu
        return ObjectiveOutput(loss=loss, components=components, weights=weights)
