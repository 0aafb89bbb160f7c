"""The step counters of tools/bench_train.py against counts worked out by hand."""

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_kdef.training.step_counts import OpCounter, flop_counter, ids_looked_up


def test_ops_and_bytes_of_a_tiny_forward():
    x, m = torch.randn(4, 3), torch.randn(3, 5)
    with OpCounter() as c:
        y = (x * 2).relu()  # mul, relu: (4, 3) fp32 each, 48 bytes
        w = y @ m  # mm: not counted in bytes
        w.view(-1).sum()  # view: free; sum: 4 bytes
    assert dict(c.counts.ops) == {"mul": 1, "relu": 1, "mm": 1, "view": 1, "sum": 1}
    assert c.counts.total == 5 and c.counts.kernels == 4
    assert c.counts.bytes_written_nonmatmul == 48 + 48 + 4


def test_host_syncs_are_reads_of_tensors_on_the_counted_device():
    x = torch.tensor([0.0, 2.0, 0.0, 1.0])
    with OpCounter() as c:
        float(x.sum())  # _local_scalar_dense
        bool(x.any())  # the same
        x.nonzero()  # a data-dependent size
        with torch.autograd.profiler.record_function("annotation"):  # no kernel
            (x * 2).relu()  # no read
    assert c.counts.host_syncs == 3
    annotations = c.counts.ops["_record_function_enter_new"] + c.counts.ops["_record_function_exit"]
    assert annotations == 2 and c.counts.kernels == c.counts.total - annotations
    # counted for a GPU, reads of CPU tensors (e.g. a library's host-side counter) do not wait
    with OpCounter(torch.device("cuda")) as gpu:
        float(x.sum())
    assert gpu.counts.host_syncs == 0 and gpu.counts.ops["_local_scalar_dense"] == 1


def test_backward_and_optimizer_ops_are_counted():
    p = torch.nn.Parameter(torch.randn(8))
    opt = torch.optim.SGD([p], lr=0.1)
    with OpCounter() as forward_only:
        (p * p).sum()
    with OpCounter() as step:
        (p * p).sum().backward()
        opt.step()
    assert forward_only.counts.total == 2
    assert step.counts.total > forward_only.counts.total + 2  # backward's muls, SGD's add
    assert step.counts.ops["mul"] >= 3  # forward, and d(p*p)/dp twice


def test_ids_count_each_table_that_reads_a_feature():
    tables = [
        EmbeddingBagConfig(name=n, embedding_dim=4, num_embeddings=10, feature_names=fs)
        for n, fs in [("a0", ["a"]), ("a1", ["a"]), ("b0", ["b"])]
    ]
    ebc = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["a", "b"], values=torch.arange(7), lengths=torch.tensor([1, 2, 0, 1, 1, 2])
    )  # a: 3 ids over 3 rows, b: 4 ids
    assert ids_looked_up(ebc, kjt) == 2 * 3 + 4


def test_flops_of_linear_layers_and_cpu_attention_forward_and_backward():
    b, h, lq, lk, d = 3, 2, 5, 7, 4
    x = torch.randn(b, 6, requires_grad=True)
    layer = torch.nn.Linear(6, 10)
    with flop_counter() as linear:
        layer(x).sum().backward()  # forward, grad of input, grad of weight: 3 x 2 b 6 10
    assert linear.get_total_flops() == 3 * 2 * b * 6 * 10
    q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for n in (lq, lk, lk))
    with flop_counter() as attention:
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    # forward: q k^T and p v; backward: the scores again, then dP, dV, dQ and dK
    assert attention.get_total_flops() == (2 + 5) * 2 * b * h * lq * lk * d
