"""DIN: parameter count equal to FuxiCTR's DIN, the local activation unit against an explicit
per-position loop, each stacked student its slice with sequences, and the planted
target-attention signal that an MLP of equal size over the mean-pooled history misses."""

from __future__ import annotations

import pytest
import torch
from zoo_helpers import PLAIN_MLP, behaviour, build_sequence, fit, mlp_params, tower_params

from recsys_kdef.models.zoo import build_student_group
from recsys_kdef.models.zoo.base import StudentInputs
from recsys_kdef.models.zoo.din import DIN, DINAttention, DINParams


def fuxictr_din_dense_params(p: DINParams, inputs: StudentInputs) -> int:
    """FuxiCTR DIN (model_zoo/DIN/src/DIN.py at 0245987) minus its sparse embedding tables:
    numeric embeddings nn.Linear(1, D, bias=False) per numeric feature; per (target, sequence)
    pair a DIN_Attention = MLP_Block(4D, attention units, output_dim=1), Dice adding alpha (H,)
    per hidden layer (its BatchNorm1d is affine=False); the DNN MLP_Block((F + Dd) * D, dnn
    units, output_dim=1) with BatchNorm1d (2H) if batch_norm and Dice alphas if Dice."""
    d = inputs.embedding_dim

    def block(in_dim, hidden, activation, batch_norm):
        sizes = [in_dim, *hidden, 1]
        total = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        total += 2 * sum(hidden) if batch_norm else 0
        return total + (sum(hidden) if activation.lower() == "dice" else 0)

    attention = block(4 * d, p.attention_hidden_units, p.attention_hidden_activations, False)
    dnn = block(inputs.flat_dim, p.dnn_hidden_units, p.dnn_activations, p.batch_norm)
    return inputs.num_dense * d + len(inputs.sequences) * attention + dnn


@pytest.mark.parametrize(
    "params, inputs",
    [
        (DINParams(), StudentInputs(5, 2, 10, ((4, 1),))),  # FuxiCTR's defaults, D = 10
        (
            DINParams(dnn_activations="Dice", batch_norm=True, attention_hidden_units=[32, 16]),
            StudentInputs(6, 0, 8, ((1, 0), (2, 0))),  # two sequences of one target
        ),
        (
            DINParams(attention_hidden_activations="relu", attention_output_activation="sigmoid"),
            StudentInputs(4, 3, 16, ((3, 0),)),
        ),
    ],
)
def test_parameter_count_equals_fuxictr(params, inputs):
    # also checked against FuxiCTR's own DIN_Attention and MLP_Block: 113110, 104483, 136114
    ours = sum(p.numel() for p in DIN(params, inputs).parameters())
    assert ours == fuxictr_din_dense_params(params, inputs)


@pytest.mark.parametrize("softmax", [False, True])
def test_attention_equals_an_explicit_loop_over_positions(softmax):
    torch.manual_seed(0)
    att = DINAttention(5, DINParams(attention_hidden_units=[6, 4], din_use_softmax=softmax))
    att.eval()  # Dice's batch norm on its running statistics, row by row alike
    with torch.no_grad():
        for m in att.modules():
            if hasattr(m, "alpha"):
                m.alpha.normal_()
    target, seq = torch.randn(3, 5), torch.randn(3, 7, 5)
    mask = torch.rand(3, 7) > 0.4
    mask[2] = False  # a row without history
    want = torch.zeros(3, 5)
    for b in range(3):
        scores = []
        for j in range(7):
            t, e = target[b], seq[b, j]
            scores.append(att.mlp(torch.cat([t, e, t - e, t * e]).unsqueeze(0))[0, 0])
        w = torch.stack(scores)
        if softmax:
            live = mask[b]
            w = torch.where(live, w, -torch.inf).softmax(0) if live.any() else w * 0 + 1 / 7
        else:
            w = w * mask[b]
        want[b] = sum(w[j] * seq[b, j] for j in range(7))
    torch.testing.assert_close(att(target, seq, mask), want)


def test_each_stacked_student_is_its_slice_and_masked_positions_are_ignored():
    inputs = StudentInputs(3, 2, 4, ((2, 0),))
    params = {"dnn_hidden_units": [8], "attention_hidden_units": [6], "batch_norm": True}
    torch.manual_seed(0)
    group = build_student_group("din", params, inputs, 3, "test")
    assert group.reads_sequence
    g = torch.Generator().manual_seed(1)
    emb, dense = torch.randn(3, 7, 3, 4, generator=g), torch.randn(7, 2, generator=g)
    seq, mask = torch.randn(3, 7, 1, 5, 4, generator=g), torch.rand(7, 1, 5, generator=g) > 0.5
    group.train()
    group(emb, dense, seq, mask)[0].sum().backward()
    group.eval()
    with torch.no_grad():
        logits, hidden = group(emb, dense, seq, mask)
        noise = torch.where(mask.unsqueeze(-1), 0.0, torch.randn(seq.shape, generator=g))
        torch.testing.assert_close(group(emb, dense, seq + noise, mask)[0], logits)
        for j in range(3):
            single = build_student_group("din", params, inputs, 1, "test").eval()
            single.load_state_dict({k: v[j : j + 1] for k, v in group.state_dict().items()})
            lj, hj = single(emb[j : j + 1], dense, seq[j : j + 1], mask)
            torch.testing.assert_close(lj[0], logits[j], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(hj[0], hidden[j], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_learns_a_target_attention_signal_an_mlp_of_equal_size_misses():
    data = behaviour(n=40_000, vocab=64)
    din = build_sequence(
        "din", {"dnn_hidden_units": [32, 16], "attention_hidden_units": [16]}, data
    )
    din_auc, bayes = fit(din, data, 30_000, epochs=5, lr=1e-2)
    in_dim = 2 * 8  # [target, mean of the history]
    h = min(range(1, 512), key=lambda h: abs(mlp_params([h, h], in_dim) - tower_params(din)))
    mlp = build_sequence("mlp", {"hidden_units": [h, h], **PLAIN_MLP}, data)
    mlp_auc, _ = fit(mlp, data, 30_000, epochs=5, lr=1e-2)
    assert abs(tower_params(mlp) - tower_params(din)) < 0.05 * tower_params(din)
    assert din_auc > bayes - 0.04, (din_auc, bayes)  # ~0.803 vs 0.829
    assert din_auc > mlp_auc + 0.03, (din_auc, mlp_auc)  # ~0.803 vs ~0.752
