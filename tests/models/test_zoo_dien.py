"""DIEN: parameter count equal to FuxiCTR's DIEN, the interest extractor equal to nn.GRU over
packed sequences, AUGRU and the auxiliary loss equal to explicit loops, each stacked student
its slice (auxiliary loss included), and a planted target-attention signal learnt."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_zoo_din import fuxictr_din_dense_params
from zoo_helpers import behaviour, build_sequence, fit, fuxictr_mlp_block_params

from recsys_kdef.models.zoo import build_student_group
from recsys_kdef.models.zoo.base import StudentInputs
from recsys_kdef.models.zoo.dien import DIEN, DIENParams, GRULayer
from recsys_kdef.models.zoo.din import DINParams


def fuxictr_dien_dense_params(p: DIENParams, inputs: StudentInputs) -> int:
    """FuxiCTR DIEN (model_zoo/DIEN/src/DIEN.py at 0245987) minus its embedding tables: per
    (target, sequence) pair an nn.GRU(D, D) (3D(D + D) + 6D), a DynamicGRU's AUGRUCell (x2h, h2h:
    Linear(D, 3D) each) and an AttentionLayer (bilinear: W_kernel D x D; dot: none;
    din_attention: MLP_Block(4D, units, 1) with Dice alphas); numeric embeddings Dd x D; the DNN
    MLP_Block(feature_dim, dnn units, 1) [+ BatchNorm 2H] [+ Dice alphas] with feature_dim =
    (F + Dd) D (+ 2D per pair with enable_sum_pooling); aux_net MLP_Block(2D, aux units, 1) if
    aux_loss_alpha > 0."""
    d, pairs = inputs.embedding_dim, len(inputs.sequences)
    gru = 3 * d * (d + d) + 6 * d
    augru = 2 * (3 * d * d + 3 * d)
    attention = {"bilinear_attention": d * d, "dot_attention": 0}.get(p.attention_type)
    if attention is None:  # DIN's attention unit: its count minus DIN's DNN and numeric parts
        din = DINParams(
            dnn_hidden_units=[1],
            attention_hidden_units=p.attention_hidden_units,
            attention_hidden_activations=p.attention_activation,
        )
        one = StudentInputs(1, 0, d, ((0, 0),))
        attention = fuxictr_din_dense_params(din, one) - fuxictr_mlp_block_params(d, [1], False)
    feature_dim = inputs.flat_dim + (2 * d * pairs if p.enable_sum_pooling else 0)
    dnn = fuxictr_mlp_block_params(feature_dim, p.dnn_hidden_units, p.batch_norm)
    dnn += sum(p.dnn_hidden_units) if p.dnn_activations.lower() == "dice" else 0
    aux = fuxictr_mlp_block_params(2 * d, p.aux_hidden_units, False) if p.aux_loss_alpha else 0
    return inputs.num_dense * d + pairs * (gru + augru + attention) + dnn + aux


@pytest.mark.parametrize(
    "params, inputs",
    [
        (DIENParams(), StudentInputs(5, 2, 16, ((4, 1),))),  # FuxiCTR's defaults
        (
            DIENParams(
                attention_type="din_attention",
                attention_hidden_units=[32, 16],
                enable_sum_pooling=True,
                aux_loss_alpha=0.5,
                batch_norm=False,
                dnn_activations="Dice",
            ),
            StudentInputs(6, 0, 8, ((1, 0), (2, 0))),
        ),
        (
            DIENParams(attention_type="dot_attention", aux_loss_alpha=1.0, aux_hidden_units=[8]),
            StudentInputs(4, 3, 12, ((3, 0),)),
        ),
    ],
)
def test_parameter_count_equals_fuxictr(params, inputs):
    ours = sum(p.numel() for p in DIEN(params, inputs).parameters())
    assert ours == fuxictr_dien_dense_params(params, inputs)


def _batch(seed: int = 0, batch: int = 5, length: int = 6, dim: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, dim, generator=g)
    lengths = torch.tensor([length, 3, 0, 1, 5])[:batch]  # a row without history
    mask = torch.arange(length) < lengths[:, None]  # left-aligned, as SequenceCut gives them
    return x, mask, lengths


def test_the_interest_extractor_equals_nn_gru_over_packed_sequences():
    torch.manual_seed(0)
    layer, gru = GRULayer(4, 4), torch.nn.GRU(4, 4, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(gru, f"{name}_l0").copy_(getattr(layer, name))
    x, mask, lengths = _batch()
    states, last = layer(x, mask)
    live = lengths > 0
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x[live], lengths[live], batch_first=True, enforce_sorted=False
    )
    out, h = gru(packed)
    want, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=6)
    torch.testing.assert_close(states[live], want)
    torch.testing.assert_close(last[live], h[0])
    assert not states[~live].any() and not last[~live].any()  # FuxiCTR's zeros for no history


def test_augru_equals_fuxictrs_cell_stepped_row_by_row():
    torch.manual_seed(0)
    layer = GRULayer(4, 4)
    x, mask, lengths = _batch(1)
    attention = torch.rand(5, 6)
    states, last = layer(x, mask, attention)
    w_ih, w_hh, b_ih, b_hh = layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh
    for b in range(5):
        h = torch.zeros(4)
        for j in range(int(lengths[b])):  # FuxiCTR AUGRUCell: chunks (u, r, n) of x2h and h2h
            i_u, i_r, i_n = (w_ih @ x[b, j] + b_ih).chunk(3)
            h_u, h_r, h_n = (w_hh @ h + b_hh).chunk(3)
            update = torch.sigmoid(i_u + h_u) * attention[b, j]
            reset = torch.sigmoid(i_r + h_r)
            new = torch.tanh(i_n + reset * h_n)
            h = h + update * (new - h)
            torch.testing.assert_close(states[b, j], h)
        torch.testing.assert_close(last[b], h)


def test_the_auxiliary_loss_equals_a_loop_over_rows_and_positions():
    torch.manual_seed(0)
    inputs = StudentInputs(2, 0, 4, ((1, 0),))
    params = DIENParams(dnn_hidden_units=[8], aux_loss_alpha=0.7, aux_hidden_units=[6])
    dien = DIEN(params, inputs).eval()
    interests = _batch(2)[0]
    seq, mask, lengths = _batch(3)
    got = dien.auxiliary_loss(interests, seq, mask)
    terms = []
    for b in range(5):
        nb = (b + 1) % 5  # negatives: the next row's history
        for j in range(int(lengths[b]) - 1):
            h = interests[b, j]
            pos = dien.aux_net(torch.cat([h, seq[b, j + 1]])[None])[0, 0]
            terms.append(F.softplus(-pos))  # BCE against 1
            if j + 1 < lengths[nb]:
                neg = dien.aux_net(torch.cat([h, seq[nb, j + 1]])[None])[0, 0]
                terms.append(F.softplus(neg))  # BCE against 0
    torch.testing.assert_close(got, torch.stack(terms).mean())
    emb, dense = torch.randn(5, 2, 4), torch.zeros(5, 0)
    _, _, aux = dien(emb, dense, seq[:, None], mask[:, None])
    extracted = dien.extractors[0](seq, mask)[0]  # the student's own interests, alpha-weighted
    torch.testing.assert_close(aux, 0.7 * dien.auxiliary_loss(extracted, seq, mask))


def test_each_stacked_student_is_its_slice_auxiliary_loss_included():
    inputs = StudentInputs(3, 2, 4, ((2, 0),))
    params = {"dnn_hidden_units": [8], "aux_loss_alpha": 0.5, "aux_hidden_units": [4]}
    torch.manual_seed(0)
    group = build_student_group("dien", params, inputs, 3, "test")
    assert group.reads_sequence and group.has_aux_loss and group.num_students == 3
    g = torch.Generator().manual_seed(1)
    emb, dense = torch.randn(3, 7, 3, 4, generator=g), torch.randn(7, 2, generator=g)
    seq, mask = torch.randn(3, 7, 1, 5, 4, generator=g), torch.rand(7, 1, 5, generator=g) > 0.3
    group.train()
    sum(t.sum() for t in group(emb, dense, seq, mask)).backward()
    group.eval()
    with torch.no_grad():
        logits, hidden, aux = group(emb, dense, seq, mask)
        assert aux.shape == (3,) and (aux > 0).all()
        for j in range(3):
            single = build_student_group("dien", params, inputs, 1, "test").eval()
            single.load_state_dict({k: v[j : j + 1] for k, v in group.state_dict().items()})
            lj, hj, aj = single(emb[j : j + 1], dense, seq[j : j + 1], mask)
            torch.testing.assert_close(lj[0], logits[j], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(hj[0], hidden[j], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(aj[0], aux[j], rtol=1e-5, atol=1e-6)


def test_unknown_gru_type_and_keys_are_errors():
    inputs = StudentInputs(2, 0, 4, ((1, 0),))
    with pytest.raises(ValueError, match="gru_type"):
        build_student_group("dien", {"gru_type": "AGRU"}, inputs, 1, "model.students[0]")
    with pytest.raises(ValueError, match="aux_loss_weight"):
        build_student_group("dien", {"aux_loss_weight": 1}, inputs, 1, "model.students[0]")


@pytest.mark.slow
def test_learns_a_target_attention_signal():
    """DIEN as its authors' code runs it: the auxiliary loss (alpha 1) and the summed history
    and its product with the target beside the AUGRU's last state (`enable_sum_pooling`).

    The signal counts the history items of the target's category. DIEN's attention is a
    softmax, so the AUGRU weighs shares (the best AUC of the share here is 0.811 against Bayes
    0.848): its last state alone reached 0.66 (0.73 with the auxiliary loss, 0.77 at D = 16).
    The target times the summed history carries the count, in D dimensions, as do the GRU
    states that must tell 32 categories apart: at D = 8 this reached 0.801-0.814 (Bayes
    0.829-0.848, 2 seeds), at D = 16 0.822-0.829 (Bayes 0.843-0.848)."""
    data = behaviour(n=30_000, vocab=64)
    params = {
        "dnn_hidden_units": [32, 16],
        "batch_norm": False,
        "enable_sum_pooling": True,
        "aux_loss_alpha": 1.0,
    }
    dien = build_sequence("dien", params, data, dim=16)
    dien_auc, bayes = fit(dien, data, 24_000, epochs=4, lr=1e-2)
    assert dien_auc > bayes - 0.04, (dien_auc, bayes)  # ~0.829 vs 0.848, DIN's margin
