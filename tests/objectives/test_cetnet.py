"""CETNet's loss and fusion against independent computations."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from recsys_kdef.models.fusion import HiddenFusion
from recsys_kdef.models.outputs import EnsembleOutput
from recsys_kdef.objectives.cetnet import CETNetObjective


def bernoulli_kl(p, q):
    return (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).mean()


def cetnet_reference(logits, fused_logit, y, alpha):
    K = logits.shape[1]
    p = [torch.sigmoid(logits[:, k]) for k in range(K)]
    loss = F.binary_cross_entropy(torch.sigmoid(fused_logit), y) + sum(
        F.binary_cross_entropy(p[k], y) for k in range(K)
    )
    if alpha > 0 and K > 1:
        pairs = list(itertools.combinations(range(K), 2))
        loss = loss + alpha * sum(
            bernoulli_kl(p[a], p[b]) + bernoulli_kl(p[b], p[a]) for a, b in pairs
        ) / len(pairs)
    return loss


@pytest.mark.parametrize("K, alpha", [(2, 0.5), (3, 0.1), (5, 1.0), (3, 0.0)])
def test_loss_equals_reference(K, alpha):
    g = torch.Generator().manual_seed(K)
    logits = (torch.randn(40, K, generator=g, dtype=torch.float64) * 2).requires_grad_()
    fused = torch.randn(40, generator=g, dtype=torch.float64).requires_grad_()
    y = (torch.rand(40, generator=g) < 0.3).double()
    output = EnsembleOutput(logits=logits, hidden=torch.zeros(40, K, 1), fused_logit=fused)
    result = CETNetObjective(alpha)(output, y)
    ref = cetnet_reference(logits, fused, y, alpha)
    torch.testing.assert_close(result.loss, ref, rtol=0, atol=1e-6)
    grads = torch.autograd.grad(result.loss, [logits, fused])
    ref_grads = torch.autograd.grad(ref, [logits, fused])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert ("kl" in result.components) == (alpha > 0)


def test_cetnet_without_a_fusion_is_refused():
    output = EnsembleOutput(logits=torch.zeros(4, 2), hidden=torch.zeros(4, 2, 1))
    with pytest.raises(ValueError, match="model.fusion.name"):
        CETNetObjective()(output, torch.zeros(4))


def fusion_case(name, stop_gradient=True, K=3, H=5):
    torch.manual_seed(0)
    fusion = HiddenFusion.named(name, K, H, stop_gradient).double()
    logits = (torch.randn(8, K, dtype=torch.float64) * 2).requires_grad_()
    hidden = torch.randn(8, K, H, dtype=torch.float64, requires_grad=True)
    return fusion, logits, hidden


def test_confidence_fusion_weights_and_readout():
    fusion, logits, hidden = fusion_case("confidence")
    fused, weights = fusion(logits, hidden)
    p = torch.sigmoid(logits)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    torch.testing.assert_close(weights, torch.softmax(-entropy, dim=1))
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(8, dtype=torch.float64))
    expected = fusion.readout((hidden * weights.unsqueeze(2)).reshape(8, -1)).squeeze(1)
    torch.testing.assert_close(fused, expected)
    assert bool(
        (weights.argmax(dim=1) == entropy.argmin(dim=1)).all()
    )  # the most confident model leads


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_confidence_weights_carry_gradient_only_without_stop_gradient(stop_gradient):
    fusion, logits, hidden = fusion_case("confidence", stop_gradient)
    fused, _ = fusion(logits, hidden)
    (grad,) = torch.autograd.grad(fused.sum(), logits, allow_unused=True)
    flows = grad is not None and grad.abs().sum() > 0
    assert flows == (not stop_gradient)


@pytest.mark.parametrize(
    "name, combine",
    [
        ("concat", lambda h: h.reshape(h.shape[0], -1)),
        ("sum", lambda h: h.sum(1)),
        ("mean", lambda h: h.mean(1)),
    ],
)
def test_unweighted_fusions(name, combine):
    fusion, logits, hidden = fusion_case(name)
    fused, weights = fusion(logits, hidden)
    torch.testing.assert_close(fused, fusion.readout(combine(hidden)).squeeze(1))
    torch.testing.assert_close(weights, torch.full_like(weights, 1 / 3))
