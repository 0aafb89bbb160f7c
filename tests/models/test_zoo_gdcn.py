"""GDCN: parameter counts equal to FuxiCTR's GDCN and GDCNP, the gated cross layer against
its equation as a loop, and the planted 3-way interaction that an MLP of equal size misses."""

from __future__ import annotations

import pytest
import torch
from zoo_helpers import against_equal_mlp, fuxictr_mlp_block_params, three_way

from recsys_kdef.models.zoo.base import StudentInputs
from recsys_kdef.models.zoo.gdcn import GDCN, GDCNP, GateCrossLayers, GDCNParams


def fuxictr_gdcn_dense_params(p: GDCNParams, inputs: StudentInputs, parallel: bool) -> int:
    """FuxiCTR GDCN / GDCNP (model_zoo/GDCN/src/GDCN.py at 0245987) minus the sparse embedding
    tables: numeric embeddings nn.Linear(1, D, bias=False) per numeric feature,
    GateCorssLayer (per layer w, wg Linear(N, N, bias=False) and b (N,)); GDCN: MLP_Block(N,
    units, output 1) on the cross output; GDCNP: MLP_Block(N, units) and fc Linear(units[-1]
    + N, 1)."""
    n = inputs.flat_dim
    total = inputs.num_dense * inputs.embedding_dim + p.num_cross_layers * (2 * n * n + n)
    if parallel:
        dnn = fuxictr_mlp_block_params(n, p.dnn_hidden_units, p.batch_norm, None)
        return total + dnn + p.dnn_hidden_units[-1] + n + 1
    return total + fuxictr_mlp_block_params(n, p.dnn_hidden_units, p.batch_norm)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize(
    "params",
    [
        GDCNParams(),  # FuxiCTR's GDCN_default: DNN [1024, 512, 256], 3 layers
        GDCNParams(dnn_hidden_units=[400, 400], num_cross_layers=2, batch_norm=True),
        GDCNParams(dnn_hidden_units=[64], num_cross_layers=5),
    ],
)
def test_parameter_count_equals_fuxictr(params, parallel):
    inputs = StudentInputs(num_sparse=13, num_dense=3, embedding_dim=16)
    ours = sum(p.numel() for p in (GDCNP if parallel else GDCN)(params, inputs).parameters())
    assert ours == fuxictr_gdcn_dense_params(params, inputs, parallel)


def test_gated_cross_layers_equal_their_equation_as_a_loop():
    """c_{l+1,i} = c_0i (sum_j W_ij c_lj + b_i) sigmoid(sum_j Wg_ij c_lj) + c_li."""
    torch.manual_seed(0)
    cross = GateCrossLayers(input_dim=4, num_layers=2)
    x0 = torch.randn(3, 4)
    x = x0.clone()
    for w, wg, b in zip(cross.w, cross.wg, cross.b):
        nxt = torch.zeros(3, 4)
        for s in range(3):
            for i in range(4):
                lin = sum(w.weight[i, j] * x[s, j] for j in range(4)) + b[i]
                gate = torch.sigmoid(sum(wg.weight[i, j] * x[s, j] for j in range(4)))
                nxt[s, i] = x0[s, i] * lin * gate + x[s, i]
        x = nxt
    torch.testing.assert_close(cross(x0), x)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gdcn", "gdcnp"])
def test_learns_a_three_way_interaction_an_mlp_of_equal_size_misses(arch):
    data = three_way(n=30_000)
    params = {"dnn_hidden_units": [16], "num_cross_layers": 2}
    gdcn_auc, mlp_auc, bayes = against_equal_mlp(arch, params, data)
    assert gdcn_auc > bayes - 0.01, (gdcn_auc, bayes)
    assert gdcn_auc > mlp_auc + 0.003, (gdcn_auc, mlp_auc)
