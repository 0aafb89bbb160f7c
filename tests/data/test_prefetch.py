import threading

import pytest
import torch

from recsys_kdef.data.prefetch import prefetch
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import Schema


def reader(path, **kw):
    return ParquetBatchReader(list_split_files(path, "train"), Schema.load(path), 64, **kw)


def same(a, b):
    return (
        torch.equal(a.dense, b.dense)
        and torch.equal(a.labels, b.labels)
        and a.sparse.keys() == b.sparse.keys()
        and torch.equal(a.sparse.values(), b.sparse.values())
        and torch.equal(a.sparse.lengths(), b.sparse.lengths())
    )


@pytest.mark.parametrize("training", [True, False])
def test_prefetched_batches_equal_the_plain_ones_in_order(tiny_dataset, training):
    kw = dict(training=training, shuffle_buffer=500, seed=7, rank=1, world_size=2)
    plain = list(reader(tiny_dataset, **kw).batches(skip=1))
    ahead = list(reader(tiny_dataset, prefetch=3, **kw).batches(skip=1))
    assert len(plain) == len(ahead) > 1
    assert all(same(a, b) for a, b in zip(plain, ahead, strict=True))


def test_producer_error_is_raised_in_the_consumer_after_the_earlier_items():
    def items():
        yield from range(5)
        raise OSError("disk gone at item 5")

    got = []
    with pytest.raises(OSError, match="disk gone at item 5"):
        for x in prefetch(items(), depth=2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_stopping_early_ends_the_producer_thread():
    before = threading.active_count()
    gen = prefetch(iter(range(10_000)), depth=2, transform=lambda x: x * 2)
    assert [next(gen) for _ in range(3)] == [0, 2, 4]
    gen.close()
    assert threading.active_count() == before


def test_negative_depth_is_refused():
    with pytest.raises(ValueError, match="depth must be >= 0, got -1"):
        list(prefetch(iter([1]), depth=-1))
