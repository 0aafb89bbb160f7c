"""EulerNet: parameter count equal to FuxiCTR's EulerNet, the Euler interaction against complex
arithmetic (prod_f z_f^a_f), and a planted interaction."""

from __future__ import annotations

import cmath

import pytest
import torch
from zoo_helpers import LogisticRegression, build, fit, two_way

from recsys_kdef.models.zoo.base import StudentInputs
from recsys_kdef.models.zoo.eulernet import EulerInteraction, EulerNet, EulerNetParams


def fuxictr_eulernet_dense_params(p: EulerNetParams, inputs: StudentInputs) -> int:
    """FuxiCTR EulerNet (model_zoo/EulerNet/src/EulerNet.py at 0245987) minus its sparse
    embedding tables: numeric embeddings nn.Linear(1, D, bias=False) per numeric feature; per
    EulerInteractionLayer of n -> K fields inter_orders (n, K), im Linear(n D, K D), bias_lam
    and bias_theta (1, D, K) and two LayerNorm(D) (built either way); mu (1, F, 1); reg
    Linear(K_L D, 1)."""
    d, widths = inputs.embedding_dim, [inputs.num_fields, *p.shape]
    total = inputs.num_dense * d + inputs.num_fields + widths[-1] * d + 1
    for n, k in zip(widths, widths[1:]):
        total += n * k + (n * d * k * d + k * d) + 2 * d * k + 2 * 2 * d
    return total


@pytest.mark.parametrize(
    "params",
    [
        EulerNetParams(),  # FuxiCTR's class defaults: one layer of 3
        EulerNetParams(shape=[20], layer_norm=True),  # its EulerNet_default config
        EulerNetParams(shape=[16, 16, 8]),
    ],
)
def test_parameter_count_equals_fuxictr(params):
    inputs = StudentInputs(num_sparse=13, num_dense=3, embedding_dim=16)
    ours = sum(p.numel() for p in EulerNet(params, inputs).parameters())
    assert ours == fuxictr_eulernet_dense_params(params, inputs)


def test_euler_interaction_is_a_product_of_complex_powers_plus_the_linear_part():
    """z'_kd = exp(b^lam_kd + i b^theta_kd) prod_f z_fd^a_fk (principal powers: the order-a
    power of lam e^{i theta}, theta in (-pi, pi]) + relu(W r + b) + i relu(W p + b)."""
    torch.manual_seed(0)
    n, k, dim = 3, 2, 2
    layer = EulerInteraction(n, k, dim, EulerNetParams()).double()
    r, p = torch.randn(4, n, dim, dtype=torch.float64), torch.randn(4, n, dim, dtype=torch.float64)
    o_r, o_p = layer(r, p)
    a = layer.inter_orders
    r_im = torch.relu(layer.im(r.flatten(1))).view(4, k, dim)
    p_im = torch.relu(layer.im(p.flatten(1))).view(4, k, dim)
    for s in range(4):
        for j in range(k):
            for t in range(dim):
                bias = complex(layer.bias_lam[0, t, j], layer.bias_theta[0, t, j])
                z = cmath.exp(bias)
                for f in range(n):
                    z *= cmath.exp(float(a[f, j]) * cmath.log(complex(r[s, f, t], p[s, f, t])))
                assert (
                    abs(complex(o_r[s, j, t] - r_im[s, j, t], o_p[s, j, t] - p_im[s, j, t]) - z)
                    < 1e-6
                )


@pytest.mark.slow
def test_learns_a_planted_two_way_interaction_a_linear_model_cannot():
    data = two_way()
    torch.manual_seed(0)
    euler_auc, bayes = fit(build("eulernet", {"shape": [8]}, data), data, 20_000, epochs=4, lr=1e-2)
    lr_auc, _ = fit(LogisticRegression(data), data, 20_000, epochs=4, lr=1e-2)
    print(f"eulernet {euler_auc:.4f}, linear {lr_auc:.4f}, bayes {bayes:.4f}")
    assert euler_auc > bayes - 0.05, (euler_auc, bayes)
    assert euler_auc > lr_auc + 0.1, (euler_auc, lr_auc)
