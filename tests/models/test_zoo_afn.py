"""AFN: parameter count equal to FuxiCTR's AFN (without the AFN+ DNN's second embedding
layer), the logarithmic neurons against a product of powers, and a planted interaction."""

from __future__ import annotations

import pytest
import torch
from zoo_helpers import LogisticRegression, build, fit, fuxictr_mlp_block_params, two_way

from recsys_kdef.models.zoo.afn import AFN, AFNParams, LogarithmicNet
from recsys_kdef.models.zoo.base import StudentInputs


def fuxictr_afn_dense_params(p: AFNParams, inputs: StudentInputs) -> int:
    """FuxiCTR AFN (model_zoo/AFN/src/AFN.py at 0245987) minus its sparse embedding tables:
    numeric embeddings nn.Linear(1, D, bias=False) per numeric feature, coefficient_W
    Linear(F, L, bias=False), BatchNorm1d(F) and BatchNorm1d(L), MLP_Block(D L, afn units,
    output 1); with ensemble_dnn a second FeatureEmbedding (numeric part: Dd x D here),
    MLP_Block(F D, dnn units, output 1) and fc Linear(2, 1)."""
    fields, d, neurons = inputs.num_fields, inputs.embedding_dim, p.logarithmic_neurons
    total = inputs.num_dense * d + fields * neurons + 2 * fields + 2 * neurons
    total += fuxictr_mlp_block_params(d * neurons, p.afn_hidden_units, p.batch_norm)
    if p.ensemble_dnn:
        total += inputs.num_dense * d
        total += fuxictr_mlp_block_params(fields * d, p.dnn_hidden_units, p.batch_norm) + 3
    return total


@pytest.mark.parametrize(
    "params",
    [
        AFNParams(),  # FuxiCTR's defaults: AFN+, 5 neurons, batch norm
        AFNParams(ensemble_dnn=False, logarithmic_neurons=1200, afn_hidden_units=[400] * 3),
        AFNParams(logarithmic_neurons=40, dnn_hidden_units=[400, 400], batch_norm=False),
    ],
)
def test_parameter_count_equals_fuxictr_without_the_second_embedding_layer(params):
    """Ours differs only by the AFN+ DNN's own embedding layer: its numeric Dd x D weights."""
    inputs = StudentInputs(num_sparse=13, num_dense=3, embedding_dim=16)
    ours = sum(p.numel() for p in AFN(params, inputs).parameters())
    second = inputs.num_dense * inputs.embedding_dim if params.ensemble_dnn else 0
    assert ours == fuxictr_afn_dense_params(params, inputs) - second


def test_logarithmic_neurons_are_products_of_powers():
    """Eval mode with fresh statistics, batch norm scales by c = 1 / sqrt(1 + eps):
    y_jd = c prod_f |e_fd|^(c w_jf)."""
    torch.manual_seed(0)
    net = LogarithmicNet(num_fields=3, neurons=2).eval()
    e = torch.randn(4, 3, 5, dtype=torch.float64)
    net = net.double()
    c = 1 / (1 + 1e-5) ** 0.5
    w = net.coefficient_W.weight
    expected = torch.ones(4, 2, 5, dtype=torch.float64)
    for j in range(2):
        for f in range(3):
            expected[:, j] = expected[:, j] * e[:, f].abs().clamp(min=1e-5) ** (c * w[j, f])
    torch.testing.assert_close(net(e), (c * expected).flatten(1))


@pytest.mark.slow
@pytest.mark.parametrize("ensemble_dnn", [True, False])
def test_learns_a_planted_two_way_interaction_a_linear_model_cannot(ensemble_dnn):
    data = two_way()
    params = {
        "ensemble_dnn": ensemble_dnn,
        "dnn_hidden_units": [32],
        "afn_hidden_units": [32],
        "logarithmic_neurons": 8,
        "batch_norm": False,
    }
    torch.manual_seed(0)
    afn_auc, bayes = fit(build("afn", params, data), data, 20_000, epochs=4, lr=1e-2)
    lr_auc, _ = fit(LogisticRegression(data), data, 20_000, epochs=4, lr=1e-2)
    print(f"afn {params} {afn_auc:.4f}, linear {lr_auc:.4f}, bayes {bayes:.4f}")
    assert afn_auc > bayes - 0.04, (afn_auc, bayes)  # seed 0: 0.79 of 0.82; linear 0.62
    assert afn_auc > lr_auc + 0.1, (afn_auc, lr_auc)
