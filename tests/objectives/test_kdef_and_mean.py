"""KDEF and mean objectives against independent, loop-based computations of docs/papers.md §4."""

import pytest
import torch
import torch.nn.functional as F

from recsys_kdef.models.outputs import EnsembleOutput
from recsys_kdef.objectives import OBJECTIVES
from recsys_kdef.objectives.kdef import KDEFObjective


def kdef_reference(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Student by student and pair by pair, as the authors' EKTF code describes it."""
    K = logits.shape[1]
    p = [torch.sigmoid(logits[:, k]) for k in range(K)]
    teacher = torch.sigmoid(logits.mean(dim=1)).detach()  # mean of logits, detached
    ctr = [F.binary_cross_entropy(p[k], y) for k in range(K)]
    kd = [F.mse_loss(p[k], teacher) for k in range(K)]
    scores = [(1 - (y - p[k]).abs()).mean() for k in range(K)]  # not detached
    lam = F.softmin(torch.stack(scores), dim=0)
    loss = torch.stack(ctr).mean() + sum(lam[k] * kd[k] for k in range(K))
    if K > 1:
        dml = []
        for k in range(K):
            peers = [j for j in range(K) if j != k]
            mu = torch.softmax(torch.stack([scores[j] - scores[k] for j in peers]), dim=0)
            dml.append(sum(mu[i] * F.mse_loss(p[k], p[j].detach()) for i, j in enumerate(peers)))
        loss = loss + torch.stack(dml).mean()
    return loss


def random_case(K, B=64, seed=0):
    g = torch.Generator().manual_seed(seed + K)
    logits = (torch.randn(B, K, generator=g, dtype=torch.float64) * 2).requires_grad_()
    labels = (torch.rand(B, generator=g) < 0.3).double()
    return logits, labels


def output(logits):
    return EnsembleOutput(logits=logits, hidden=torch.zeros(logits.shape[0], logits.shape[1], 1))


@pytest.mark.parametrize("K", [1, 2, 5])
def test_kdef_value_and_gradients_equal_the_reference(K):
    logits, labels = random_case(K)
    ours = KDEFObjective()(output(logits), labels)
    (grad_ours,) = torch.autograd.grad(ours.loss, logits)
    ref = kdef_reference(logits, labels)
    (grad_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(ours.loss, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=0, atol=1e-6)
    assert ("dml" in ours.components) == (K > 1)
    if K > 1:
        mu = ours.weights["mu"]
        assert torch.all(mu.diagonal() == 0)
        torch.testing.assert_close(mu.sum(dim=1), torch.ones(K, dtype=mu.dtype))
    torch.testing.assert_close(ours.weights["lambda"].sum(), torch.tensor(1.0, dtype=torch.float64))


def test_exam_scores_carry_gradient_into_the_weights():
    """S is not detached (the authors' code): detaching it would change the gradient."""
    logits, labels = random_case(3)
    loss = KDEFObjective()(output(logits), labels).loss
    (grad,) = torch.autograd.grad(loss, logits)

    def detached_exam_reference(logits):
        p = torch.sigmoid(logits)
        s = (1 - (labels[:, None] - p).abs()).mean(0).detach()
        teacher = torch.sigmoid(logits.mean(1)).detach()
        kd = ((p - teacher[:, None]) ** 2).mean(0)
        pair = ((p[:, :, None] - p.detach()[:, None, :]) ** 2).mean(0)
        gap = (s[None, :] - s[:, None]).masked_fill(torch.eye(3, dtype=torch.bool), float("-inf"))
        ctr = F.binary_cross_entropy_with_logits(
            logits, labels[:, None].expand_as(logits), reduction="none"
        ).mean(0)
        return (
            ctr.mean() + (F.softmin(s, 0) * kd).sum() + (torch.softmax(gap, 1) * pair).sum(1).mean()
        )

    (grad_detached,) = torch.autograd.grad(detached_exam_reference(logits), logits)
    assert (grad - grad_detached).abs().max() > 1e-6


def test_label_flips_only_in_training_and_at_the_rate():
    logits, labels = random_case(2, B=20000)
    obj = KDEFObjective(label_flip_rate=0.25)
    torch.manual_seed(5)
    flipped = obj(output(logits), labels).loss
    torch.manual_seed(5)
    flips = torch.rand_like(labels) < 0.25
    assert abs(flips.double().mean().item() - 0.25) < 0.01
    torch.testing.assert_close(
        flipped, kdef_reference(logits, torch.where(flips, 1 - labels, labels))
    )
    obj.eval()
    torch.testing.assert_close(obj(output(logits), labels).loss, kdef_reference(logits, labels))


def test_mean_objective_is_bce_of_the_mean_logit_only():
    logits, labels = random_case(4)
    result = OBJECTIVES["mean"]()(output(logits), labels)
    expected = F.binary_cross_entropy(torch.sigmoid(logits.mean(dim=1)), labels)
    torch.testing.assert_close(result.loss, expected, rtol=0, atol=1e-10)
    (grad,) = torch.autograd.grad(result.loss, logits)
    torch.testing.assert_close(
        grad, grad[:, :1].expand_as(grad)
    )  # every student gets the same signal
