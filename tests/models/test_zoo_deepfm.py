"""DeepFM: parameter count against FuxiCTR's DeepFM, the FM term against the explicit pairwise
sum, and a planted 2-way interaction of two sparse fields learnt to near Bayes, which a linear
model cannot (an FM term has no 3-way product, so the 3-way test does not apply)."""

from __future__ import annotations

import pytest
import torch
from zoo_helpers import LogisticRegression, build, fit, fuxictr_mlp_block_params, two_way

from recsys_kdef.models.zoo.base import StudentInputs
from recsys_kdef.models.zoo.deepfm import DeepFM, DeepFMParams, fm_pairwise


def fuxictr_deepfm_dense_params(p: DeepFMParams, inputs: StudentInputs) -> int:
    """FuxiCTR DeepFM (model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py at 0245987) minus its sparse
    embedding tables (the FM's LR tables included): numeric embeddings nn.Linear(1, D,
    bias=False) per numeric feature, the LR's nn.Linear(1, 1, bias=False) per numeric feature
    and its bias, and the MLP_Block over the flat embeddings."""
    n, d = inputs.flat_dim, inputs.embedding_dim
    lr = inputs.num_dense + 1
    return inputs.num_dense * d + lr + fuxictr_mlp_block_params(n, p.hidden_units, p.batch_norm)


@pytest.mark.parametrize(
    "params",
    [
        DeepFMParams(),  # FuxiCTR's defaults: DNN [64, 64, 64]
        DeepFMParams(hidden_units=[400, 400, 400], batch_norm=True),
        DeepFMParams(hidden_units=[128]),
    ],
)
def test_parameter_count_equals_fuxictr_with_our_first_order_term(params):
    """Ours differs only in the first-order term: FuxiCTR's LR has Dd numeric weights (+ bias)
    beside its per-id tables; ours is one Linear((F + Dd) * D, 1) (+ bias) and no tables."""
    inputs = StudentInputs(num_sparse=13, num_dense=3, embedding_dim=16)
    ours = sum(p.numel() for p in DeepFM(params, inputs).parameters())
    fuxictr = fuxictr_deepfm_dense_params(params, inputs)
    assert ours == fuxictr - inputs.num_dense + inputs.flat_dim


def test_fm_term_equals_the_explicit_pairwise_sum():
    e = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(0))
    pairs = sum((e[:, i] * e[:, j]).sum(dim=1) for i in range(6) for j in range(i + 1, 6))
    torch.testing.assert_close(fm_pairwise(e), pairs)


@pytest.mark.slow
@pytest.mark.parametrize("hidden_units", [[32, 32], []])  # DeepFM; FM + linear output only
def test_learns_a_planted_two_way_interaction_a_linear_model_cannot(hidden_units):
    """Seed 0: DeepFM 0.810, FM alone 0.809 (8 epochs), linear 0.618, Bayes 0.823; the FM alone
    with its pairwise term zeroed reaches 0.618."""
    data = two_way()
    torch.manual_seed(0)
    deepfm = build("deepfm", {"hidden_units": hidden_units}, data)
    deepfm_auc, bayes = fit(deepfm, data, 20_000, epochs=4 if hidden_units else 8, lr=1e-2)
    lr_auc, _ = fit(LogisticRegression(data), data, 20_000, epochs=4, lr=1e-2)
    print(f"deepfm {hidden_units} {deepfm_auc:.4f}, linear {lr_auc:.4f}, bayes {bayes:.4f}")
    assert deepfm_auc > bayes - 0.025, (deepfm_auc, bayes)
    assert deepfm_auc > lr_auc + 0.1, (deepfm_auc, lr_auc)
