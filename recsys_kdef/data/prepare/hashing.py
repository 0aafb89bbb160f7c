"""Stable 64-bit hashes, vectorised: of tokens (hashed fields) and of row positions (splits)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def uniform(seed: int, salt: int, values: np.ndarray) -> np.ndarray:
    """A number in [0, 1) per (seed, salt, value), the same however the values are chunked."""
    with np.errstate(over="ignore"):
        x = values.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x = x + np.uint64(salt) * np.uint64(0xD1B54A32D192ED03)
        x = mix64(x + np.uint64(seed) * np.uint64(0xBF58476D1CE4E5B9))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def hash_tokens(tokens: pa.Array) -> np.ndarray:
    """(N,) uint64, a stable hash of each token (integers by value, anything else by its text)."""
    if pa.types.is_integer(tokens.type) or pa.types.is_boolean(tokens.type):
        x = pc.fill_null(tokens.cast(pa.int64()), 0).to_numpy().view(np.uint64)
        return mix64(x)
    if not (pa.types.is_string(tokens.type) or pa.types.is_large_string(tokens.type)):
        tokens = tokens.cast(pa.string())
    tokens = pc.fill_null(tokens, "")
    width = np.int64 if pa.types.is_large_string(tokens.type) else np.int32
    offsets = np.frombuffer(tokens.buffers()[1], width)[
        tokens.offset : tokens.offset + len(tokens) + 1
    ]
    data = np.frombuffer(tokens.buffers()[2] or b"\0", np.uint8).astype(np.uint64)
    starts, lengths = offsets[:-1].astype(np.int64), np.diff(offsets).astype(np.int64)
    # polynomial hash: sum_j byte_j * P^j (mod 2^64), one reduceat over all the bytes
    pos = np.arange(offsets[0], offsets[-1]) - np.repeat(starts, lengths)
    powers = np.cumprod(np.full(max(int(lengths.max(initial=0)), 1), 0x100000001B3, np.uint64))
    powers = np.concatenate([[np.uint64(1)], powers[:-1]])
    with np.errstate(over="ignore"):
        terms = data[offsets[0] : offsets[-1]] * powers[pos]
        sums = np.zeros(len(tokens), np.uint64)
        nonempty = lengths > 0
        if terms.size:
            sums[nonempty] = np.add.reduceat(terms, (starts - offsets[0])[nonempty])
        return mix64(sums + lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
