"""FinalMLP: parameter count equal to FuxiCTR's FinalMLP, the multi-head bilinear fusion and the
feature selection against their equations, and the planted 3-way interaction that an MLP of
equal size misses."""

from __future__ import annotations

import pytest
import torch
from zoo_helpers import (
    against_equal_mlp,
    three_way,
)

from recsys_kdef.models.zoo.base import StudentInputs
from recsys_kdef.models.zoo.finalmlp import (
    FeatureSelection,
    FinalMLP,
    FinalMLPParams,
    InteractionAggregation,
)


def fuxictr_finalmlp_dense_params(p: FinalMLPParams, inputs: StudentInputs) -> int:
    """FuxiCTR FinalMLP (model_zoo/FinalMLP/src/FinalMLP.py at 0245987) minus its sparse tables
    (the context embeddings of categorical context features are sparse tables too):
    numeric embeddings nn.Linear(1, D, bias=False); two MLP_Blocks N -> hidden [+ BatchNorm1d];
    with use_fs two gates MLP_Block(D * max(1, |context|) -> fs_hidden_units -> N) and, for an
    empty context, a (1, D) bias; fusion w_x Linear(H1, 1), w_y Linear(H2, 1) and
    w_xy (heads * H1/heads * H2/heads, 1)."""
    n, d = inputs.flat_dim, inputs.embedding_dim

    def mlp(sizes, batch_norm=False):
        bn = 2 * sum(sizes[1:]) if batch_norm else 0
        return sum(a * b + b for a, b in zip(sizes, sizes[1:])) + bn

    total = inputs.num_dense * d
    total += mlp([n, *p.mlp1_hidden_units], p.mlp1_batch_norm)
    total += mlp([n, *p.mlp2_hidden_units], p.mlp2_batch_norm)
    if p.use_fs:
        for ctx in (p.fs1_context, p.fs2_context):
            total += mlp([d * max(1, len(ctx)), *p.fs_hidden_units, n]) + (0 if ctx else d)
    h1, h2 = p.mlp1_hidden_units[-1], p.mlp2_hidden_units[-1]
    return total + h1 + 1 + h2 + 1 + h1 * h2 // p.num_heads


@pytest.mark.parametrize(
    "params",
    [  # 13 sparse + 3 numeric fields, D = 16; FuxiCTR's own FinalMLP minus its sparse tables
        FinalMLPParams(),  # global gating, [64, 64, 64] x 2: 89,298
        FinalMLPParams(  # 34,034
            use_fs=False, num_heads=4, mlp1_batch_norm=True, mlp2_hidden_units=[32]
        ),
        FinalMLPParams(  # contexts c0, c5 / c2 (sparse fields): 62,962
            fs_hidden_units=[16, 8],
            num_heads=2,
            mlp1_hidden_units=[100, 50],
            fs1_context=[0, 5],
            fs2_context=[2],
        ),
    ],
)
def test_parameter_count_equals_fuxictr(params):
    inputs = StudentInputs(num_sparse=13, num_dense=3, embedding_dim=16)
    ours = sum(p.numel() for p in FinalMLP(params, inputs).parameters())
    assert ours == fuxictr_finalmlp_dense_params(params, inputs)


@pytest.mark.parametrize("num_heads", [1, 2, 3])
def test_bilinear_fusion_equals_a_loop_over_heads_and_pairs(num_heads):
    torch.manual_seed(0)
    fusion = InteractionAggregation(6, 12, num_heads)
    x, y = torch.randn(5, 6), torch.randn(5, 12)
    hx, hy = 6 // num_heads, 12 // num_heads
    w = fusion.w_xy.flatten()  # FuxiCTR's layout: head-major, then x index, then y index
    expected = fusion.w_x(x).squeeze(1) + fusion.w_y(y).squeeze(1)
    for b in range(5):
        for h in range(num_heads):
            for i in range(hx):
                for j in range(hy):
                    weight = w[(h * hx + i) * hy + j]
                    expected[b] = expected[b] + x[b, h * hx + i] * weight * y[b, h * hy + j]
    torch.testing.assert_close(fusion(x, y), expected)


def test_feature_selection_gates_each_value_by_twice_a_sigmoid_of_the_context():
    torch.manual_seed(0)
    inputs = StudentInputs(num_sparse=3, num_dense=0, embedding_dim=2)
    fs = FeatureSelection(inputs, [4], context=[2])
    e = torch.randn(5, 3, 2)
    gate = 2 * torch.sigmoid(fs.gate(e[:, 2]))  # (B, F D) from field 2's embedding
    torch.testing.assert_close(fs(e), e.flatten(1) * gate)
    global_fs = FeatureSelection(inputs, [4], context=[])
    out = global_fs(e)  # one learned gate for every row
    torch.testing.assert_close(out / e.flatten(1), (out / e.flatten(1))[:1].expand(5, -1))


def test_a_context_field_that_does_not_exist_is_an_error_naming_it():
    with pytest.raises(ValueError, match="context fields \\[7\\] do not exist"):
        FinalMLP(FinalMLPParams(fs1_context=[7]), StudentInputs(4, 2, 3))


@pytest.mark.slow
def test_learns_a_three_way_interaction_an_mlp_of_equal_size_misses():
    # FinalMLP [16] x 2 with global feature selection (3,818 parameters) reaches 0.766-0.770 over
    # initialisations, the MLP [49, 49] ~0.761, Bayes 0.776; without the bilinear term ~0.71
    data = three_way(n=30_000)
    params = {"mlp1_hidden_units": [16], "mlp2_hidden_units": [16], "fs_hidden_units": [16]}
    fmlp_auc, mlp_auc, bayes = against_equal_mlp("finalmlp", params, data)
    assert fmlp_auc > bayes - 0.012, (fmlp_auc, bayes)
    assert fmlp_auc > mlp_auc + 0.003, (fmlp_auc, mlp_auc)
