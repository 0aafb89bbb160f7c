"""Every KDEF variant and consistency loss against an independent loop-based computation."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from recsys_kdef.models.outputs import EnsembleOutput
from recsys_kdef.objectives.kdef import KDEFObjective


def consistency_reference(name, p, q):
    if name == "mse":
        return F.mse_loss(p, q)
    if name == "huber":
        return F.huber_loss(p, q, delta=1.0)
    if name == "bce":
        return F.binary_cross_entropy(p, q)
    return (q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))).mean()  # KL(q || p)


def reference(
    logits, y, variant="full", consistency="mse", detach_exam=False, kd=1.0, dml=1.0, tau=1.0, t=1.0
):
    """The loss written out per student and pair; kd / dml weights, temperature tau (soft
    predictions sigmoid(z / tau), the term times tau^2) and exam temperature t."""
    K = logits.shape[1]
    p = [torch.sigmoid(logits[:, k]) for k in range(K)]
    soft = [torch.sigmoid(logits[:, k] / tau) for k in range(K)]
    teacher = torch.sigmoid(logits.mean(dim=1) / tau).detach()
    scores = [(1 - (y - p[k]).abs()).mean() / t for k in range(K)]
    if detach_exam:
        scores = [s.detach() for s in scores]
    examined = variant != "no_exam"
    loss = torch.stack([F.binary_cross_entropy(p[k], y) for k in range(K)]).mean()
    if variant in ("full", "only_kd", "no_exam"):
        lam = (
            F.softmin(torch.stack(scores), dim=0) if examined else torch.ones(K, dtype=logits.dtype)
        )
        loss = loss + kd * tau**2 * sum(
            lam[k] * consistency_reference(consistency, soft[k], teacher) for k in range(K)
        )
    if variant in ("full", "only_dml", "no_exam") and K > 1:
        terms = []
        for k in range(K):
            peers = [j for j in range(K) if j != k]
            if examined:
                mu = torch.softmax(torch.stack([scores[j] - scores[k] for j in peers]), dim=0)
            else:
                mu = torch.ones(len(peers), dtype=logits.dtype)
            terms.append(
                sum(
                    mu[i] * consistency_reference(consistency, soft[k], soft[j].detach())
                    for i, j in enumerate(peers)
                )
            )
        loss = loss + dml * tau**2 * torch.stack(terms).mean()
    return loss


def case(K, seed=0):
    g = torch.Generator().manual_seed(seed + 10 * K)
    logits = (torch.randn(48, K, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    labels = (torch.rand(48, generator=g) < 0.4).double()
    return logits, labels


def out(logits):
    return EnsembleOutput(logits=logits, hidden=torch.zeros(logits.shape[0], logits.shape[1], 1))


@pytest.mark.parametrize(
    "variant, consistency, K",
    list(
        itertools.product(
            ["full", "only_kd", "only_dml", "no_exam"], ["mse", "huber", "kl", "bce"], [1, 2, 4]
        )
    ),
)
def test_variant_equals_reference(variant, consistency, K):
    logits, labels = case(K)
    ours = KDEFObjective(variant=variant, consistency=consistency)(out(logits), labels).loss
    ref = reference(logits, labels, variant, consistency)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "consistency, kd, dml, tau, t",
    [
        ("mse", 4.0, 0.5, 1.0, 1.0),
        ("mse", 1.0, 2.0, 2.0, 1e-2),
        ("huber", 0.5, 1.0, 3.0, 1.0),
        ("kl", 1.0, 1.0, 3.0, 1.0),
        ("bce", 2.0, 0.0, 2.0, 1e-3),
    ],
)
def test_weights_and_temperatures_equal_the_reference(consistency, kd, dml, tau, t):
    logits, labels = case(4, seed=3)
    ours = KDEFObjective(
        consistency=consistency, kd_weight=kd, dml_weight=dml, temperature=tau, exam_temperature=t
    )(out(logits), labels)
    ref = reference(logits, labels, "full", consistency, kd=kd, dml=dml, tau=tau, t=t)
    torch.testing.assert_close(ours.loss, ref, rtol=0, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours.loss, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-6)
    if t < 1:  # a sharp exam: the weights follow the scores, not 1 / K
        assert ours.weights["lambda"].max() - ours.weights["lambda"].min() > 0.05


@pytest.mark.parametrize("consistency", ["mse", "kl"])
def test_each_ablation_removes_exactly_its_term(consistency):
    logits, labels = case(4)
    full = KDEFObjective(consistency=consistency)(out(logits), labels)
    only_kd = KDEFObjective(variant="only_kd", consistency=consistency)(out(logits), labels)
    only_dml = KDEFObjective(variant="only_dml", consistency=consistency)(out(logits), labels)
    assert set(full.components) == {"ctr", "kd", "dml"}
    assert set(only_kd.components) == {"ctr", "kd"} and set(only_dml.components) == {"ctr", "dml"}
    torch.testing.assert_close(full.loss, only_kd.loss + full.components["dml"], rtol=0, atol=1e-12)
    torch.testing.assert_close(full.loss, only_dml.loss + full.components["kd"], rtol=0, atol=1e-12)
    no_exam = KDEFObjective(variant="no_exam", consistency=consistency)(out(logits), labels)
    assert torch.equal(no_exam.weights["lambda"], torch.ones(4, dtype=torch.float64))
    assert torch.equal(no_exam.weights["mu"], 1 - torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize(
    "variant, consistency", list(itertools.product(["full", "only_kd", "only_dml"], ["mse", "kl"]))
)
def test_a_detached_exam_equals_the_reference(variant, consistency):
    logits, labels = case(3)
    obj = KDEFObjective(variant=variant, consistency=consistency, detach_exam=True)
    ours = obj(out(logits), labels).loss
    ref = reference(logits, labels, variant, consistency, detach_exam=True)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-6)


def test_detaching_the_exam_changes_gradients_not_values():
    logits, labels = case(3)
    attached = KDEFObjective()(out(logits), labels).loss
    detached = KDEFObjective(detach_exam=True)(out(logits), labels).loss
    torch.testing.assert_close(attached, detached, rtol=0, atol=1e-12)
    ref = reference(logits, labels, detach_exam=True)
    (g_det,) = torch.autograd.grad(detached, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    (g_att,) = torch.autograd.grad(attached, logits)
    torch.testing.assert_close(g_det, g_ref, rtol=0, atol=1e-6)
    assert (g_det - g_att).abs().max() > 1e-6
