"""DHEN: parameter count equal to the paper's layer written out (FuxiCTR has no DHEN), one layer
against its equation, and the planted 3-way interaction learnt to within a margin of Bayes."""

from __future__ import annotations

import pytest
import torch
from zoo_helpers import build, fit, three_way

from recsys_kdef.models.zoo.base import StudentInputs
from recsys_kdef.models.zoo.dhen import DHEN, DHENLayer, DHENParams


def dhen_dense_params(p: DHENParams, inputs: StudentInputs) -> int:
    """Our own count from the paper's description (no FuxiCTR DHEN exists): numeric embeddings
    (Dd D); per layer each module (attention W_q, W_k, W_v: 3 D^2; linear and cross:
    Linear(F D, F D)), the ensemble Linear(k D, D) and LayerNorm(D); fc Linear(F D, 1)."""
    n, d = inputs.flat_dim, inputs.embedding_dim
    modules = sum(3 * d * d if m == "self_attention" else n * n + n for m in p.modules)
    layer = modules + len(p.modules) * d * d + d + 2 * d
    return inputs.num_dense * d + p.num_layers * layer + n + 1


@pytest.mark.parametrize(
    "params",
    [
        DHENParams(),  # 2 layers of self-attention + linear
        DHENParams(num_layers=3, modules=["self_attention", "linear", "cross"], num_heads=4),
        DHENParams(num_layers=1, modules=["cross"]),
    ],
)
def test_parameter_count_equals_the_papers_layer_written_out(params):
    inputs = StudentInputs(num_sparse=13, num_dense=3, embedding_dim=16)
    ours = sum(p.numel() for p in DHEN(params, inputs).parameters())
    assert ours == dhen_dense_params(params, inputs)


def test_one_layer_is_the_normalised_ensemble_plus_shortcut():
    torch.manual_seed(0)
    layer = DHENLayer(3, 4, DHENParams(modules=["self_attention", "cross"], num_heads=2))
    x = torch.randn(5, 3, 4)
    q, k, v = (x @ w.t() for w in layer.blocks[0].qkv.weight.split(4))
    att = torch.empty(5, 3, 4)
    for h in range(2):
        s = slice(2 * h, 2 * h + 2)
        att[:, :, s] = (
            torch.softmax(q[:, :, s] @ k[:, :, s].transpose(1, 2) / 2**0.5, -1) @ v[:, :, s]
        )
    lin = layer.blocks[1].linear
    cross = x * (x.flatten(1) @ lin.weight.t() + lin.bias).view(5, 3, 4)
    ens = torch.cat([att, cross], -1) @ layer.ensemble.weight.t() + layer.ensemble.bias
    expected = torch.nn.functional.layer_norm(ens + x, (4,), layer.norm.weight, layer.norm.bias)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.slow
def test_learns_a_three_way_interaction_to_within_a_margin_of_bayes():
    # DHEN, 2 layers of self-attention + linear (5,465 parameters), reaches ~0.761-0.764, about
    # an MLP of equal size ([60, 60]: ~0.763), Bayes 0.776; with the ensemble dropped ~0.61
    data = three_way(n=30_000)
    torch.manual_seed(0)
    dhen = build("dhen", {}, data)
    dhen_auc, bayes = fit(dhen, data, 20_000, epochs=4)
    assert dhen_auc > bayes - 0.022, (dhen_auc, bayes)
