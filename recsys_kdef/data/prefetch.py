"""Background prefetch: run a batch iterator on a thread, a bounded queue ahead of the loop.

Parquet decoding and `Columns.to_batch` release the GIL for most of their time, so a thread
overlaps them with the step. The order is the iterator's own (one producer, FIFO queue); an
exception raised by the producer is re-raised in the consumer at the position it happened;
closing the consumer early (a `break`) stops the producer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(
    items: Iterator[T], depth: int, transform: Callable[[T], T] | None = None
) -> Iterator[T]:
    """Yield `items` in order, produced up to `depth` ahead on a daemon thread; `transform`
    (e.g. pinning a batch's memory) runs on that thread too. depth = 0: no thread."""
    if depth < 0:
        raise ValueError(f"prefetch depth must be >= 0, got {depth}")
    if depth == 0:
        yield from (transform(x) if transform else x for x in items)
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in items:
                if not put(transform(x) if transform else x):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, re-raised there
            put(_Failure(e))

    worker = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join(timeout=5.0)
