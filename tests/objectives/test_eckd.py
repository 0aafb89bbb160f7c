"""ECKD's distillation losses, gating and gradient paths against independent computations."""

import pytest
import torch
import torch.nn.functional as F

from recsys_kdef.models.outputs import DistillOutput, EnsembleOutput
from recsys_kdef.objectives.eckd import ECKDObjective

B = 32


def ens(k, h, seed, grad=False):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, k, generator=g, dtype=torch.float64) * 2).requires_grad_(grad)
    hidden = torch.randn(B, k, h, generator=g, dtype=torch.float64).requires_grad_(grad)
    return EnsembleOutput(logits=logits, hidden=hidden)


def batch(teacher_shapes=((1, 6), (3, 4)), student=(2, 5)):
    teachers = [ens(k, h, seed=10 + i, grad=True) for i, (k, h) in enumerate(teacher_shapes)]
    stud = ens(*student, seed=1, grad=True)
    labels = (torch.rand(B, generator=torch.Generator().manual_seed(3)) < 0.3).double()
    return DistillOutput(student=stud, teachers=teachers), labels


def make(method="soft_label", heads="ensemble", shapes=((1, 6), (3, 4)), **kw):
    dims = (
        [k * h for k, h in shapes]
        if heads == "ensemble"
        else [h for k, h in shapes for _ in range(k)]
    )
    obj = ECKDObjective(dims, 5, method=method, teacher_heads=heads, **kw).double()
    if kw.get("gating", True):
        with torch.no_grad():
            obj.gate_weight.normal_()
            obj.gate_bias.normal_()
    return obj


def gated_teacher(obj, output, heads):
    if heads == "ensemble":
        z = torch.stack([t.logits.mean(1) for t in output.teachers], dim=1)
    else:
        z = torch.cat([t.logits for t in output.teachers], dim=1)
    z = z.detach()
    if obj.gating:
        alpha = torch.softmax(z * obj.gate_weight + obj.gate_bias, dim=1)
    else:
        alpha = torch.full_like(z, 1 / z.shape[1])
    return z, alpha


@pytest.mark.parametrize("heads", ["ensemble", "students"])
@pytest.mark.parametrize("tau, beta", [(1.0, 0.5), (3.0, 0.3)])
def test_soft_label_loss(heads, tau, beta):
    output, y = batch()
    obj = make(heads=heads, temperature=tau, beta=beta)
    result = obj(output, y)
    z, alpha = gated_teacher(obj, output, heads)
    z_t = (alpha * z).sum(1)
    loss = 0
    for k in range(2):
        z_s = output.student.logits[:, k]
        loss = (
            loss
            + (1 - beta) * F.binary_cross_entropy(torch.sigmoid(z_s), y)
            + beta * F.binary_cross_entropy(torch.sigmoid(z_s / tau), torch.sigmoid(z_t / tau))
        )
    torch.testing.assert_close(result.loss, loss / 2, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.heads["teacher"], z_t.detach())
    torch.testing.assert_close(alpha.sum(1), torch.ones(B, dtype=torch.float64))
    assert alpha.std(dim=0).max() > 0  # the gate is per sample, not one weight per teacher


def test_hint_loss_and_gradients_reach_student_and_gate_only():
    output, y = batch()
    obj = make(method="hint", heads="ensemble", beta=0.01)
    result = obj(output, y)
    z, alpha = gated_teacher(obj, output, "ensemble")
    v = [t.hidden.reshape(B, -1).detach() for t in output.teachers]
    target = sum(alpha[:, i : i + 1] * obj.projections[i](v[i]) for i in range(2))
    loss = 0
    for k in range(2):
        s = output.student
        loss = (
            loss
            + F.binary_cross_entropy(torch.sigmoid(s.logits[:, k]), y)
            + 0.01 * ((target - s.hidden[:, k]) ** 2).sum(1).mean()
        )
    torch.testing.assert_close(result.loss, loss / 2, rtol=0, atol=1e-6)
    teacher_leaves = [t.logits for t in output.teachers] + [t.hidden for t in output.teachers]
    grads = torch.autograd.grad(
        result.loss,
        [
            output.student.logits,
            output.student.hidden,
            obj.gate_weight,
            obj.projections[0].weight,
            *teacher_leaves,
        ],
        allow_unused=True,
    )
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:4])
    assert all(g is None for g in grads[4:])  # nothing flows back into the teachers


def test_cotrain_adds_the_teachers_own_loss_and_labels_gate_option():
    output, y = batch()
    base = make(gating=False)(output, y)
    co = make(gating=False, cotrain=True)(output, y)
    teacher_bce = torch.stack(
        [
            F.binary_cross_entropy_with_logits(t.logits, y[:, None].expand_as(t.logits))
            for t in output.teachers
        ]
    ).mean()
    torch.testing.assert_close(co.loss, base.loss + teacher_bce, rtol=0, atol=1e-9)
    (g,) = torch.autograd.grad(co.loss, output.teachers[1].logits)
    assert g.abs().sum() > 0  # co-trained teachers learn from their labels
    obj = make(gate_objective="labels")
    plain = make()
    plain.load_state_dict(obj.state_dict())  # the same gate
    z, alpha = gated_teacher(obj, output, "ensemble")
    extra = obj(output, y).loss - plain(output, y).loss
    torch.testing.assert_close(
        extra, F.binary_cross_entropy_with_logits((alpha * z).sum(1), y), rtol=0, atol=1e-9
    )
