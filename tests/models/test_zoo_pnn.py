"""IPNN: parameter count equal to FuxiCTR's PNN, the inner products against an explicit loop
over field pairs, and a planted 2-way interaction of two sparse fields learnt to near Bayes,
which a linear model cannot (inner products are 2-way; the 3-way test does not apply)."""

from __future__ import annotations

import pytest
import torch
from zoo_helpers import (
    PLAIN_MLP,
    LogisticRegression,
    build,
    equal_param_mlp,
    fit,
    fuxictr_mlp_block_params,
    tower_params,
    two_way,
)

from recsys_kdef.models.zoo.base import StudentInputs
from recsys_kdef.models.zoo.pnn import PNN, PNNParams, inner_products


def fuxictr_pnn_dense_params(p: PNNParams, inputs: StudentInputs) -> int:
    """FuxiCTR PNN (model_zoo/PNN/src/PNN.py at 0245987) minus its sparse embedding tables:
    numeric embeddings nn.Linear(1, D, bias=False) per numeric feature and the MLP_Block over
    N * D + N (N - 1) / 2 inputs (the triu mask is a parameter with requires_grad=False, which
    FuxiCTR's count_parameters skips)."""
    n = inputs.num_fields
    in_dim = inputs.flat_dim + n * (n - 1) // 2
    mlp = fuxictr_mlp_block_params(in_dim, p.hidden_units, p.batch_norm)
    return inputs.num_dense * inputs.embedding_dim + mlp


@pytest.mark.parametrize(
    "params",
    [
        PNNParams(),  # FuxiCTR's defaults: DNN [64, 64, 64]
        PNNParams(hidden_units=[1000, 1000, 1000], batch_norm=True),
        PNNParams(hidden_units=[256]),
    ],
)
def test_parameter_count_equals_fuxictr(params):
    inputs = StudentInputs(num_sparse=13, num_dense=3, embedding_dim=16)
    ours = sum(p.numel() for p in PNN(params, inputs).parameters())
    assert ours == fuxictr_pnn_dense_params(params, inputs)


def test_inner_products_equal_an_explicit_loop_over_field_pairs():
    e = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(0))
    pairs = [(e[:, i] * e[:, j]).sum(dim=1) for i in range(6) for j in range(i + 1, 6)]
    torch.testing.assert_close(inner_products(e), torch.stack(pairs, dim=1))


@pytest.mark.slow
def test_learns_a_planted_two_way_interaction_a_linear_model_cannot():
    """Seed 0: IPNN 0.811, linear 0.618, Bayes 0.823. An equal-size MLP gets 0.809 (IPNN ahead
    by 0.002-0.003 over seeds 0-2 at vocab 40, behind by 0.002-0.008 at vocab 100 and 200: the
    MLP learns this product of two embeddings as well), so that is only held to 0.01."""
    data = two_way()
    torch.manual_seed(0)
    pnn = build("pnn", {"hidden_units": [32, 32]}, data)
    pnn_auc, bayes = fit(pnn, data, 20_000, epochs=4, lr=1e-2)
    lr_auc, _ = fit(LogisticRegression(data), data, 20_000, epochs=4, lr=1e-2)
    hidden = equal_param_mlp(tower_params(pnn), data)
    torch.manual_seed(0)
    mlp = build("mlp", {"hidden_units": hidden, **PLAIN_MLP}, data)
    mlp_auc, _ = fit(mlp, data, 20_000, epochs=4, lr=1e-2)
    print(f"pnn {pnn_auc:.4f}, mlp {hidden} {mlp_auc:.4f}, linear {lr_auc:.4f}, bayes {bayes:.4f}")
    assert abs(tower_params(mlp) - tower_params(pnn)) < 0.05 * tower_params(pnn)
    assert pnn_auc > bayes - 0.025, (pnn_auc, bayes)
    assert pnn_auc > lr_auc + 0.1, (pnn_auc, lr_auc)
    assert pnn_auc > mlp_auc - 0.01, (pnn_auc, mlp_auc)


@pytest.mark.slow
def test_the_product_layer_alone_learns_it():
    """No hidden layers (a linear output over [l_z, l_p]): seed 0 0.813; with the inner
    products zeroed it is a linear model, 0.615."""
    data = two_way()
    torch.manual_seed(0)
    pnn = build("pnn", {"hidden_units": []}, data)
    pnn_auc, bayes = fit(pnn, data, 20_000, epochs=4, lr=1e-2)
    assert pnn_auc > bayes - 0.025, (pnn_auc, bayes)
