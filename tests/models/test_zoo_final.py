"""FINAL: parameter count equal to FuxiCTR's FinalNet, the factorized interaction layer against
its equation, and the planted 3-way interaction that an MLP of equal size misses."""

from __future__ import annotations

import pytest
import torch
from zoo_helpers import (
    against_equal_mlp,
    three_way,
)

from recsys_kdef.models.zoo.base import StudentInputs
from recsys_kdef.models.zoo.final import FactorizedInteraction, Final, FinalParams


def fuxictr_finalnet_dense_params(p: FinalParams, inputs: StudentInputs) -> int:
    """FuxiCTR FinalNet (model_zoo/FinalNet/src/FinalNet.py at 0245987) minus its sparse tables:
    numeric embeddings nn.Linear(1, D, bias=False) per numeric feature; FeatureGating
    Linear(F, F) (F counts numeric fields); per FinalBlock layer FactorizedInteraction
    Linear(in, out) ("concat") or Linear(in, 2 out) ("sum") [+ BatchNorm1d(out)]; fc1, fc2
    Linear(last, 1). Block 1 reads 2 F D values with gating, F D otherwise; block 2 F D."""
    f, n, d = inputs.num_fields, inputs.flat_dim, inputs.embedding_dim
    total = inputs.num_dense * d

    def block(in_dim, hidden):
        widths = [w * 2 if p.residual_type == "sum" else w for w in hidden]
        sizes = [in_dim, *hidden]
        linear = sum(a * w + w for a, w in zip(sizes, widths))
        return linear + (2 * sum(hidden) if p.batch_norm else 0) + hidden[-1] + 1

    if p.use_feature_gating:
        total += f * f + f
    total += block(2 * n if p.use_feature_gating else n, p.block1_hidden_units)
    if p.block_type == "2B":
        total += block(n, p.block2_hidden_units)
    return total


@pytest.mark.parametrize(
    "params",
    [
        FinalParams(),  # 2B, [64, 64, 64] x 2, batch norm, concat; FuxiCTR: 50,482
        FinalParams(block_type="1B", use_feature_gating=True),  # 41,921
        FinalParams(  # 21,690
            residual_type="sum",
            batch_norm=False,
            block1_hidden_units=[32, 16],
            block2_hidden_units=[8],
        ),
        FinalParams(use_feature_gating=True, block1_hidden_units=[100, 50]),  # 82,238
    ],
)
def test_parameter_count_equals_fuxictr(params):
    # 13 sparse + 3 numeric fields, D = 16; the counts in the comments are FuxiCTR's own
    # FinalNet (built from its source) minus its sparse tables
    inputs = StudentInputs(num_sparse=13, num_dense=3, embedding_dim=16)
    ours = sum(p.numel() for p in Final(params, inputs).parameters())
    assert ours == fuxictr_finalnet_dense_params(params, inputs)


@pytest.mark.parametrize("residual_type", ["concat", "sum"])
def test_factorized_interaction_is_a_product_of_two_linear_maps(residual_type):
    torch.manual_seed(0)
    layer = FactorizedInteraction(5, 6, residual_type)
    x = torch.randn(4, 5)
    w, b = layer.linear.weight, layer.linear.bias
    half = w.shape[0] // 2
    h2 = x @ w[:half].t() + b[:half]  # the first half of the output rows
    h1 = x @ w[half:].t() + b[half:]
    expected = torch.cat([h2, h1 * h2], 1) if residual_type == "concat" else h2 + h1 * h2
    torch.testing.assert_close(layer(x), expected)


def test_odd_widths_with_concat_are_an_error_naming_the_block():
    with pytest.raises(ValueError, match="block2_hidden_units=\\[8, 5\\]"):
        FinalParams(block2_hidden_units=[8, 5])


@pytest.mark.slow
def test_learns_a_three_way_interaction_an_mlp_of_equal_size_misses():
    # FINAL 1B [16, 16] (1,097 parameters) reaches 0.770-0.774 over initialisations, the MLP
    # [21, 21] ~0.759, Bayes 0.776;
    # with h1 * h2 replaced by h1 (a linear block) FINAL falls to ~0.61
    data = three_way(n=30_000)
    params = {"block_type": "1B", "block1_hidden_units": [16, 16], "batch_norm": False}
    final_auc, mlp_auc, bayes = against_equal_mlp("final", params, data)
    assert final_auc > bayes - 0.008, (final_auc, bayes)
    assert final_auc > mlp_auc + 0.007, (final_auc, mlp_auc)
