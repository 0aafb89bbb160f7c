"""DCN V2: parameter count equal to FuxiCTR's DCNv2, the low-rank mixture against a per-expert
loop as FuxiCTR writes it, and the planted 3-way interaction that an MLP of equal size misses."""

from __future__ import annotations

import pytest
import torch
from zoo_helpers import (
    against_equal_mlp,
    three_way,
)

from recsys_kdef.models.zoo.base import StudentInputs
from recsys_kdef.models.zoo.dcnv2 import CrossNetMix, DCNv2, DCNv2Params


def fuxictr_dcnv2_dense_params(p: DCNv2Params, inputs: StudentInputs) -> int:
    """FuxiCTR DCNv2 (model_zoo/DCNv2/src/DCNv2.py at 0245987) minus its sparse embedding tables:
    numeric embeddings nn.Linear(1, D, bias=False) per numeric feature, CrossNetV2 (L x
    Linear(N, N)) or CrossNetMix (per layer U, V: (E, N, r), C: (E, r, r), bias (N, 1); E gates
    Linear(N, 1, bias=False)), MLP_Blocks (Linear [+ BatchNorm1d]) and fc Linear(final, 1)."""
    n, d = inputs.flat_dim, inputs.embedding_dim
    total = inputs.num_dense * d
    if p.use_low_rank_mixture:
        e, r = p.num_experts, p.low_rank
        total += p.num_cross_layers * (2 * e * n * r + e * r * r + n) + e * n
    else:
        total += p.num_cross_layers * (n * n + n)

    def mlp(hidden):
        sizes = [n, *hidden]
        bn = 2 * sum(hidden) if p.batch_norm else 0
        return sum(a * b + b for a, b in zip(sizes, sizes[1:])) + bn

    final = n
    if p.model_structure in ("stacked", "stacked_parallel"):
        total += mlp(p.stacked_dnn_hidden_units)
        final = p.stacked_dnn_hidden_units[-1]
    if p.model_structure in ("parallel", "stacked_parallel"):
        total += mlp(p.parallel_dnn_hidden_units)
        final += p.parallel_dnn_hidden_units[-1]
    return total + final + 1


@pytest.mark.parametrize(
    "params",
    [
        DCNv2Params(),  # parallel, 3 full-rank layers, DNN [400, 400]
        DCNv2Params(model_structure="stacked", batch_norm=True),
        DCNv2Params(model_structure="stacked_parallel", use_low_rank_mixture=True),
        DCNv2Params(model_structure="crossnet_only", use_low_rank_mixture=True, low_rank=8),
    ],
)
def test_parameter_count_equals_fuxictr(params):
    inputs = StudentInputs(num_sparse=13, num_dense=3, embedding_dim=16)
    ours = sum(p.numel() for p in DCNv2(params, inputs).parameters())
    assert ours == fuxictr_dcnv2_dense_params(params, inputs)


def test_low_rank_mixture_equals_fuxictrs_per_expert_loop():
    torch.manual_seed(0)
    mix = CrossNetMix(input_dim=6, num_layers=2, low_rank=3, num_experts=4)
    x0 = torch.randn(5, 6)
    x = x0.unsqueeze(2)  # (B, N, 1), FuxiCTR's layout
    for i in range(2):
        experts, gates = [], []
        for e in range(4):
            gates.append(x.squeeze(2) @ mix.gating.weight[e : e + 1].t())  # (B, 1)
            v = torch.tanh(mix.V[i, e].t() @ x)
            v = torch.tanh(mix.C[i, e] @ v)
            experts.append(
                (x0.unsqueeze(2) * (mix.U[i, e] @ v + mix.bias[i].unsqueeze(1))).squeeze(2)
            )
        moe = torch.stack(experts, 2) @ torch.stack(gates, 1).softmax(1)  # (B, N, 1)
        x = moe + x
    torch.testing.assert_close(mix(x0), x.squeeze(2))


@pytest.mark.slow
def test_learns_a_three_way_interaction_an_mlp_of_equal_size_misses():
    data = three_way(n=30_000)
    dcn_auc, mlp_auc, bayes = against_equal_mlp(
        "dcnv2", {"model_structure": "crossnet_only", "num_cross_layers": 2}, data
    )
    assert dcn_auc > bayes - 0.006, (dcn_auc, bayes)
    assert dcn_auc > mlp_auc + 0.005, (dcn_auc, mlp_auc)
