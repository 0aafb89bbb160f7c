import copy
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from recsys_kdef.models.towers import BatchedMLP, StudentBatchNorm, dropout_mask, dropout_masks


def separate_mlps(batched: BatchedMLP, activation: nn.Module) -> list[nn.Sequential]:
    """K ordinary MLPs (Linear -> BatchNorm1d -> act, ..., Linear) holding the batched weights."""
    towers = []
    for k in range(batched.num_students):
        layers: list[nn.Module] = []
        for w, b, norm in zip(batched.weights, batched.biases, batched.norms):
            lin = nn.Linear(w.shape[1], w.shape[2]).double()
            lin.weight.data.copy_(w[k].t())
            lin.bias.data.copy_(b[k, 0])
            bn = nn.BatchNorm1d(w.shape[2]).double()
            bn.weight.data.copy_(norm.weight[k, 0])
            bn.bias.data.copy_(norm.bias[k, 0])
            layers += [lin, bn, activation]
        head = nn.Linear(batched.head_weight.shape[1], 1).double()
        head.weight.data.copy_(batched.head_weight[k].t())
        head.bias.data.copy_(batched.head_bias[k, 0])
        towers.append(nn.Sequential(*layers, head))
    return towers


@pytest.mark.parametrize("shared_input", [False, True])
def test_batched_towers_equal_k_separate_mlps_in_train_and_eval(shared_input):
    torch.manual_seed(0)
    K, B, D = 3, 32, 10
    batched = BatchedMLP(
        K, D, [8, 6], batch_norm=True, dropout=0.0, activation="relu", batch_norm_debias=False
    ).double()
    with torch.no_grad():  # non-trivial affine parameters
        for norm in batched.norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
    reference = separate_mlps(batched, nn.ReLU())
    x = torch.randn(1 if shared_input else K, B, D, dtype=torch.float64)
    for _ in range(3):  # train mode: batch statistics, and running statistics move alike
        logits, hidden = batched(x)
        for k, tower in enumerate(reference):
            h = tower[:-1](x[0 if shared_input else k])  # one pass, so BatchNorm updates once
            torch.testing.assert_close(hidden[k], h, rtol=0, atol=1e-10)
            torch.testing.assert_close(logits[k], tower[-1](h).squeeze(1), rtol=0, atol=1e-10)
    batched.eval()
    for tower in reference:
        tower.eval()
    for grad in (True, False):  # without autograd: the folded batch-norm path
        with torch.set_grad_enabled(grad):
            logits, hidden = batched(x)
        for k, tower in enumerate(reference):
            x_k = x[0 if shared_input else k]
            torch.testing.assert_close(hidden[k], tower[:-1](x_k), rtol=0, atol=1e-10)
            torch.testing.assert_close(logits[k], tower(x_k).squeeze(1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_inference_forward_equals_eval_forward_with_any_activation(batch_norm):
    torch.manual_seed(1)
    towers = BatchedMLP(2, 7, [5, 4], batch_norm=batch_norm, activation="gelu").double()
    for norm in towers.norms if batch_norm else []:  # eval uses these running statistics
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.2, 3.0)
    towers.eval()
    x = torch.randn(2, 9, 7, dtype=torch.float64)
    with_autograd = towers(x)
    with torch.no_grad():
        folded = towers(x)
    for a, b in zip(with_autograd, folded, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_student_batch_norm_running_stats_match_batchnorm1d():
    torch.manual_seed(1)
    sbn = StudentBatchNorm(2, 4, debias=False).double()
    refs = [nn.BatchNorm1d(4).double() for _ in range(2)]
    for _ in range(4):
        x = torch.randn(2, 16, 4, dtype=torch.float64) * 3 + 1
        sbn(x)
        for k in range(2):
            refs[k](x[k])
    for k in range(2):
        torch.testing.assert_close(sbn.running_mean[k, 0], refs[k].running_mean)
        torch.testing.assert_close(sbn.running_var[k, 0], refs[k].running_var)


def test_debiased_running_stats_are_a_cumulative_mean_then_a_moving_average():
    torch.manual_seed(3)
    sbn = StudentBatchNorm(1, 3, momentum=0.25).double()
    batches = [torch.randn(1, 8, 3, dtype=torch.float64) * 0.01 + 5 for _ in range(6)]
    mean, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for t, x in enumerate(batches, start=1):
        sbn(x)
        w = max(0.25, 1 / t)  # 1, 1/2, 1/3, then the momentum
        mean = (1 - w) * mean + w * x[0].mean(0)
        var = (1 - w) * var + w * x[0].var(0, correction=1)
        torch.testing.assert_close(sbn.running_mean[0, 0], mean)
        torch.testing.assert_close(sbn.running_var[0, 0], var)
    assert sbn.num_batches_tracked.tolist() == [[[6]]]
    # after 3 batches the start (mean 0, var 1) is gone: eval normalises like the data
    fresh = StudentBatchNorm(1, 3).double()
    for x in batches[:3]:
        fresh(x)
    biased = torch.stack([x[0].mean(0) for x in batches[:3]]).mean(0)
    torch.testing.assert_close(fresh.running_mean[0, 0], biased)
    assert float(fresh.running_var.max()) < 1e-3


def test_students_are_initialised_independently_and_gradients_stay_separate():
    torch.manual_seed(2)
    towers = BatchedMLP(2, 5, [4])
    assert not torch.equal(towers.weights[0][0], towers.weights[0][1])
    logits, _ = towers(torch.randn(2, 8, 5))
    logits[0].sum().backward()
    assert towers.weights[0].grad[0].abs().sum() > 0
    assert towers.weights[0].grad[1].abs().sum() == 0


def composed_forward(towers: BatchedMLP, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training forward as plain autograd ops: Linear -> norm -> ReLU -> dropout per layer."""
    h, p, (k, batch) = x, towers.dropout.p, (towers.num_students, x.shape[1])
    # the towers' draws: one for all layers, each layer's units laid out (K, H, B)
    units = [k * w.shape[2] for w in towers.weights]
    masks = dropout_masks(units, batch, p, x.device) if p else [None] * len(units)
    for weight, bias, norm, mask in zip(towers.weights, towers.biases, towers.norms, masks):
        h = torch.relu(norm(torch.matmul(h, weight) + bias))
        if p:
            h = h.masked_fill(mask.view(k, -1, batch).transpose(1, 2), 0) / (1 - p)
    return torch.baddbmm(towers.head_bias, h, towers.head_weight).squeeze(-1), h


@pytest.mark.parametrize(("dropout", "shared_input"), [(0.0, False), (0.3, False), (0.3, True)])
def test_the_fused_training_pass_equals_autograd_through_the_composition(dropout, shared_input):
    """Outputs, every gradient and the running statistics match (same dropout draws), with
    per-student or shared inputs; the bias before each norm gets exactly zero gradient (it
    cancels in the batch mean)."""
    torch.manual_seed(2)
    fused = BatchedMLP(3, 10, [8, 6], dropout=dropout).double()
    with torch.no_grad():
        for norm in fused.norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
        for b in fused.biases:
            b.normal_()
    composed = copy.deepcopy(fused)
    x = torch.randn(1 if shared_input else 3, 64, 10, dtype=torch.float64)
    r_logits, r_hidden = torch.randn(3, 64, dtype=torch.float64), torch.randn(3, 64, 6).double()
    results = []
    for towers, forward in (
        (fused, fused.forward),
        (composed, partial(composed_forward, composed)),
    ):
        torch.manual_seed(3)
        x_k = x.clone().requires_grad_()
        logits, hidden = forward(x_k)
        ((logits * r_logits).sum() + (hidden * r_hidden).sum()).backward()
        grads = {n: p.grad for n, p in towers.named_parameters()}
        results.append((logits, hidden, x_k.grad, grads, dict(towers.named_buffers())))
    (logits, hidden, grad_x, grads, buffers), (logits_r, hidden_r, grad_x_r, grads_r, buffers_r) = (
        results
    )
    if dropout:
        assert (hidden == 0).float().mean() > 0.3  # dropout zeroed units (and ReLU did)
    torch.testing.assert_close(logits, logits_r, rtol=0, atol=1e-10)
    torch.testing.assert_close(hidden, hidden_r, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad_x, grad_x_r, rtol=0, atol=1e-10)
    for name, grad in grads.items():
        if name.startswith("biases."):
            assert torch.count_nonzero(grad) == 0, name
            assert grads_r[name].abs().max() < 1e-9, name
        else:
            torch.testing.assert_close(grad, grads_r[name], rtol=0, atol=1e-10, msg=name)
            assert grad.abs().max() > 1e-3, name  # a real gradient
    for name, buffer in buffers.items():
        torch.testing.assert_close(buffer, buffers_r[name], rtol=0, atol=1e-12, msg=name)


def test_dropout_masks_drop_at_the_asked_rate_independently():
    torch.manual_seed(4)
    for p in (0.1, 0.3, 0.5):
        mask = dropout_mask(torch.Size([200, 1001]), p, torch.device("cpu")).float()  # 4 ∤ n
        assert abs(float(mask.mean()) - p) < 0.003, (p, mask.mean())  # 4 standard errors
        # four neighbours share one 64-bit draw: their masks must still be uncorrelated
        flat = mask.flatten()
        for lag in (1, 2, 3, 4):
            corr = torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1]
            assert abs(float(corr)) < 0.01, (p, lag, corr)  # 4.5 standard errors
    # several tensors from one draw: each at the rate, of its own shape, not copies
    first, second = dropout_masks([300, 300], 700, 0.3, torch.device("cpu"))
    assert first.shape == second.shape == (1, 300, 700)
    for mask in (first, second):
        assert abs(float(mask.float().mean()) - 0.3) < 0.003
    assert float((first == second).float().mean()) < 0.6  # independent: 0.3^2 + 0.7^2 = 0.58


def test_under_a_bf16_autocast_the_towers_return_float32_logits_close_to_float32_training():
    torch.manual_seed(5)
    towers = BatchedMLP(3, 32, [64, 32], dropout=0.0)
    x = torch.randn(3, 256, 32)
    results = []
    for enabled in (False, True):
        towers.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            logits, hidden = towers(x)
        logits.sum().backward()
        results.append((logits, hidden, towers.weights[0].grad.clone()))
    (logits, hidden, grad), (logits16, hidden16, grad16) = results
    assert logits16.dtype == torch.float32
    assert hidden16.dtype == torch.bfloat16  # as autocast leaves a matmul's output
    torch.testing.assert_close(logits16, logits, rtol=0.05, atol=0.05)
    torch.testing.assert_close(hidden16.float(), hidden, rtol=0.05, atol=0.05)
    assert not torch.equal(logits16, logits)  # the matmuls did run in bf16
    assert torch.nn.functional.cosine_similarity(grad16.flatten(), grad.flatten(), dim=0) > 0.99


class _Dtypes(TorchDispatchMode):
    """The dtypes of the first output of each op, by op name."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, set[torch.dtype]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, tuple) else out
        if isinstance(first, torch.Tensor):
            self.seen.setdefault(func._schema.name.split("::")[-1], set()).add(first.dtype)
        return out


def test_under_a_bf16_autocast_the_activations_are_stored_in_bf16():
    """The elementwise passes (norm, ReLU, dropout, their backward) write bf16: half the
    bytes; the logits and every gradient stay float32."""
    torch.manual_seed(6)
    towers = BatchedMLP(3, 32, [64, 64], dropout=0.2)
    x = torch.randn(3, 128, 32)
    with _Dtypes() as d, torch.autocast("cpu", dtype=torch.bfloat16):
        logits, hidden = towers(x)
        (logits.sum() + hidden.sum()).backward()
    for op in ("native_batch_norm", "clamp_", "threshold_backward"):  # clamp_: ReLU and dropout
        assert d.seen[op] == {torch.bfloat16}, (op, d.seen[op])
    assert d.seen["native_batch_norm_backward"] == {torch.bfloat16}  # its input gradient
    assert logits.dtype == torch.float32 and hidden.dtype == torch.bfloat16
    assert all(p.grad.dtype == torch.float32 for p in towers.parameters())


def test_running_statistics_over_many_steps_and_a_reload_equal_the_composition():
    """The norm kernels move the running statistics by a weight the host follows: over the
    debiased steps (1, 1/2, ...) and the momentum after them, after a state dict is loaded
    (counters changed outside the towers) and with students counted apart, the buffers equal
    those of StudentBatchNorm's own tracking (to float32's rounding of the weight, which the
    kernels take as a float)."""
    torch.manual_seed(4)
    fused = BatchedMLP(3, 10, [8, 6], dropout=0.2).double()
    with torch.no_grad():
        for b in fused.biases:
            b.normal_()
    composed = copy.deepcopy(fused)

    def steps(n: int) -> None:
        for _ in range(n):
            x = torch.randn(3, 32, 10, dtype=torch.float64) * 2 + 1
            for forward in (fused.forward, partial(composed_forward, composed)):
                torch.manual_seed(5)
                forward(x)
        for name, buffer in fused.named_buffers():
            torch.testing.assert_close(
                buffer, dict(composed.named_buffers())[name], rtol=1e-7, atol=1e-8, msg=name
            )

    steps(14)  # past 1 / momentum
    state = copy.deepcopy(composed.state_dict())
    for m in state:
        if m.endswith("num_batches_tracked"):
            state[m] = torch.full_like(state[m], 2)  # a checkpoint of step 2: debiased again
    fused.load_state_dict(state)
    composed.load_state_dict(state)
    steps(3)
    for towers in (fused, composed):
        towers.norms[0].num_batches_tracked[1] += 5  # the students counted apart
    steps(2)
    assert fused.norms[0].num_batches_tracked.flatten().tolist() == [7, 12, 7]
